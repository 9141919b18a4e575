"""Thread caps so that ``--jobs N`` worker processes share the cores instead of oversubscribing them.

Imported by freshly spawned workers before anything heavy: it must not import numpy, torch or ITK at
module level, because the OpenMP/BLAS/ITK thread pools read their environment variables when loaded.
"""

from __future__ import annotations

import os

_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_per_job(jobs: int) -> int:
    return max(1, available_cores() // max(1, jobs))


def thread_env(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in _ENV}


def init_worker(threads: int) -> None:
    """Process-pool initializer: cap every library's thread pool at ``threads``.

    The environment is enough for libraries loaded later (torch reads ``OMP_NUM_THREADS``, ITK/ANTs
    ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``); torch is not imported here, since only the network skull
    strippers need it and it costs seconds per worker. Already loaded libraries are capped directly.
    """
    import sys

    os.environ.update(thread_env(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
