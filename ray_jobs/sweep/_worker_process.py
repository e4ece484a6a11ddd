"""What a trial's worker process keeps between the trials and rounds it runs: the loaded
dataset, and a heap handed back to the OS after each network."""

from __future__ import annotations

import ctypes
import sys

from adprune_core.data import ArrayDataset, load_dataset
from ray_jobs.sweep._spec import SweepSpec


def release_freed_memory() -> None:
    """Hand the heap memory of the previous network back to the OS (glibc ``malloc_trim``).

    Each round allocates tensors of new shapes. glibc keeps the freed multi-megabyte buffers
    of the last round on its heap, so a trial process grew by ~150 MiB per round on VGG-19
    x 0.25 (benchmarks/memory.py). Trimming once per restart costs milliseconds; a fixed
    mmap threshold would also stop the growth but made every epoch 1.7x slower.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to trim
        return
    libc.malloc_trim(0)


# With reuse_actors a restarted trial lands in the same process: keep its data loaded.
_DATA_CACHE: dict[str, ArrayDataset] = {}


def cached_dataset(spec: SweepSpec) -> ArrayDataset:
    key = repr(spec.data)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(spec.data)
    return _DATA_CACHE[key]
