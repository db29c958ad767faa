"""glibc malloc settings for CPU training: keep XLA's freed buffers instead of unmapping them.

By default glibc mmaps every block over 32 MiB (and any block a worker thread's arena cannot
hold) and unmaps it on free. XLA:CPU frees its per-step temp buffer (350 MB for the tiny
config, 900 MB for small) and YNNPACK's [predictions, vocab] buffers after every step, so each
step faults them in again page by page: ~105k minor faults and ~0.2 s of system time per tiny
step (benchmarks/RESULTS.md), 1.38x of its speed. One arena, no mmap, no trimming removes them;
the process keeps its peak heap for its lifetime. Same as starting with
GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # <malloc.h>


def retain_freed_memory() -> bool:
  """Applies the settings; False (and no change) where the C library is not glibc."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  return bool(libc.mallopt(_M_ARENA_MAX, 1) and libc.mallopt(_M_MMAP_MAX, 0)
              and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
