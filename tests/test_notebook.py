"""The Colab TPU notebook runs unchanged on 8 fake CPU devices (its code cells, in order)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_colab_notebook_runs_on_8_cpu_devices(tmp_path):
  nb = json.load(open(os.path.join(ROOT, "notebooks", "colab_tpu.ipynb")))
  source = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
  script = tmp_path / "notebook.py"
  script.write_text(source)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "BERT_JAX_NOTEBOOK_SMOKE": "1",
         "BERT_JAX_DATA_DIR": str(tmp_path / "tfds"),
         "BERT_JAX_NOTEBOOK_WORKDIR": str(tmp_path / "work")}
  proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "8 CPU devices" in proc.stdout
  assert "mlm_accuracy" in proc.stdout
  assert os.path.exists(tmp_path / "work" / "eval_results.json")
