"""The XLA_FLAGS workaround for CAS-loop float atomics (bert_jax/xla_flags.py)."""

import os

from bert_jax import xla_flags

OPT = xla_flags.FTZ_ATOMICS


def test_with_backend_option_adds_or_extends():
  assert xla_flags.with_backend_option("", OPT) == f"--xla_backend_extra_options={OPT}"
  flags = "--xla_force_host_platform_device_count=8"
  assert xla_flags.with_backend_option(flags, OPT) == (
      f"{flags} --xla_backend_extra_options={OPT}")
  extended = xla_flags.with_backend_option("--xla_backend_extra_options=a=1 --b", OPT)
  assert extended == f"--xla_backend_extra_options=a=1,{OPT} --b"
  assert xla_flags.with_backend_option(extended, OPT) == extended  # idempotent


def test_no_change_without_a_cuda_plugin():
  before = os.environ.get("XLA_FLAGS")
  assert xla_flags.use_native_gpu_atomics() is False  # the CPU test machine has no CUDA plugin
  assert os.environ.get("XLA_FLAGS") == before
