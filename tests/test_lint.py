"""The linter configured in pyproject.toml ([tool.ruff]) finds nothing."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_is_clean():
  pytest.importorskip("ruff")
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_function_in_the_package_is_longer_than_100_lines():
  """The project's rule (DEVELOPERS.md): a longer function is split into named steps."""
  import ast
  long = []
  for folder, _, files in os.walk(os.path.join(ROOT, "bert_jax")):
    for name in sorted(f for f in files if f.endswith(".py")):
      path = os.path.join(folder, name)
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          if lines > 100:
            long.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name} ({lines})")
  assert not long, "functions longer than 100 lines: " + ", ".join(long)
