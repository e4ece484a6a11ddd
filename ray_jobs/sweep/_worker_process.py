"""What a trial's worker process keeps between the trials and rounds it runs: the loaded
dataset, and a heap handed back to the OS after each network."""

from __future__ import annotations

import copy
import ctypes
import json
import sys
from dataclasses import dataclass

from adprune_core.config import spec_to_dict
from adprune_core.data import ArrayDataset, load_dataset
from ray_jobs.sweep._search_space import absolute_data_root
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


@dataclass(frozen=True)
class PreloadedData:
    """The dataset the driver loaded in its checks (a local sweep), for trials of the same
    ``data`` section: it reaches their workers through Ray's object store
    (``tune.with_parameters``) instead of being loaded again in each, which for the bundled
    digits costs 1.5 s of CPU per worker, most of it importing scikit-learn."""

    key: str
    dataset: ArrayDataset


def data_key(spec: SweepSpec) -> str:
    """The data section as the trials see it: Tune's search space makes its root absolute."""
    data = copy.deepcopy(spec_to_dict(spec)["data"])
    absolute_data_root({"data": data})
    return json.dumps(data, sort_keys=True)


# With reuse_actors a restarted trial lands in the same process: keep its data loaded.
_DATA_CACHE: dict[str, ArrayDataset] = {}


def cached_dataset(spec: SweepSpec, preloaded: PreloadedData | None = None) -> ArrayDataset:
    key = data_key(spec)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        if preloaded is not None and preloaded.key == key:
            _DATA_CACHE[key] = preloaded.dataset
        else:
            _DATA_CACHE[key] = load_dataset(spec.data)
    return _DATA_CACHE[key]
