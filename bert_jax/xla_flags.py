"""XLA_FLAGS set before the first backend use: native float atomics on jaxlib 0.10.2-0.11.0 GPUs.

Those jaxlib releases ship an LLVM whose NVPTX backend lowers a float32 `atomicrmw fadd` to a
compare-and-swap loop unless denormals are flushed (jax-ml/jax#38806, openxla/xla#46225), so
every scatter-add on a GPU (the word-embedding gradient among them) serializes when many
tokens share a row: [MASK], [CLS], [PAD]. LLVM's `-nvptx-allow-ftz-atomics` restores the
native instruction, at the price of flushing a denormal partial sum inside that atomic add.
"""

from __future__ import annotations

import importlib.util
import os
import re

FTZ_ATOMICS = "-nvptx-allow-ftz-atomics"
_AFFECTED = ((0, 10, 2), (0, 11, 0))  # first and last jax release with the CAS-loop lowering
_EXTRA = "--xla_backend_extra_options="


def with_backend_option(xla_flags: str, option: str) -> str:
  """`xla_flags` with `option` appended to --xla_backend_extra_options (added if absent)."""
  tokens = xla_flags.split()
  for i, token in enumerate(tokens):
    if token.startswith(_EXTRA):
      values = [v for v in token[len(_EXTRA):].split(",") if v]
      if option not in values:
        tokens[i] = _EXTRA + ",".join(values + [option])
      return " ".join(tokens)
  return " ".join(tokens + [_EXTRA + option])


def _version(text: str) -> tuple[int, int, int]:
  match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
  return tuple(int(g) for g in match.groups()) if match else (0, 0, 0)


def use_native_gpu_atomics() -> bool:
  """Adds FTZ_ATOMICS to XLA_FLAGS on an affected jax with a CUDA plugin; True if it did.

  Call before jax touches a backend (XLA reads XLA_FLAGS once); a no-op on CPU-only installs,
  on other jax versions, and when BERT_JAX_KEEP_XLA_FLAGS=1.
  """
  import jax  # importing jax does not start a backend
  if os.environ.get("BERT_JAX_KEEP_XLA_FLAGS", "") not in ("", "0"):
    return False
  if not _AFFECTED[0] <= _version(jax.__version__) <= _AFFECTED[1]:
    return False
  if not any(importlib.util.find_spec(f"jax_cuda{v}_plugin") for v in (12, 13)):
    return False
  flags = os.environ.get("XLA_FLAGS", "")
  if FTZ_ATOMICS in flags:
    return False
  os.environ["XLA_FLAGS"] = with_backend_option(flags, FTZ_ATOMICS)
  return True
