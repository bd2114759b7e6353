"""Settings for a process the command line owns: a worker (``rivertrio worker``, the bench's).

A library must leave the interpreter's settings to its program; a worker process
started by the command line is rivertrio's own program, so it sets them.
"""

from __future__ import annotations

import gc

__all__ = ["WORKER_GC_THRESHOLD", "tune_worker_process"]

#: Allocations (less deallocations) between two collections of the youngest
#: generation in a worker process, where Python's default is 700.
WORKER_GC_THRESHOLD = 20_000


def tune_worker_process() -> None:
    """Make Python's cyclic garbage collector cheap for a process that works jobs.

    Call once everything long-lived is loaded (modules, the config, the user's
    workers), before the client starts. A busy worker allocates a few dozen
    objects per job that reference counting frees, almost never a cycle; with
    the default thresholds the collector still ran every 700 allocations and
    walked the whole heap every few thousand jobs, about a quarter of a worker's
    CPU. Here the objects alive at startup are frozen out of every collection
    (`gc.freeze`) and the youngest generation is collected every
    `WORKER_GC_THRESHOLD` allocations: cycles a job does leave are still
    collected, a little later.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(WORKER_GC_THRESHOLD, older, oldest)
