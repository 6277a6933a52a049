"""Where many independent tasks run: this process, a local Dask cluster, or a running Dask cluster.

One call, :func:`map_tasks`, for the simulator (a subject or a CT case per
task) and for evaluation (an image per task):

* ``workers=1`` and no ``scheduler``: in this process, in order (no Dask
  needed; what a laptop run and the tests use);
* ``workers=N``: a :class:`dask.distributed.LocalCluster` of N worker
  processes on this machine, one thread each (torch and NumPy inside a task
  use the cores given by ``threads``);
* ``scheduler="tcp://HOST:8786"``: the tasks are submitted to a running Dask
  cluster, e.g. one started on a SLURM allocation with dask-jobqueue
  (README, "From 600 CTs to a model"). The workers must reach the same
  files (a shared file system) and have 3ddx installed.

**Memory allocation in the workers.** A Dask nanny exports
``MALLOC_TRIM_THRESHOLD_=65536`` to its workers (``distributed.nanny.pre-spawn-environ``), so that
glibc hands freed memory back to the system at once. Setting it also switches off glibc's
adaptive mmap threshold: every block over 128 KiB is then mapped fresh and page-faulted in on
first touch, and the renderer's few-MB temporaries, hundreds per view, pay that
each time: with the variable, two workers simulate about a third slower (docs/benchmarks.md,
simulator, third round: ``benchmarks/simulate.py --trim-row``). So the local cluster starts its workers without it
(glibc's default policy: a worker keeps its peak memory, about 1 GB for a subject, for reuse).
A running cluster's workers are configured by whoever starts them; for this workload give them
``MALLOC_TRIM_THRESHOLD_: null`` under ``distributed: nanny: pre-spawn-environ:`` in a Dask YAML
config file (e.g. ``~/.config/dask/3ddx.yaml``), as the README shows for SLURM.

Dask, not a home-made scheduler, decides where each task runs, and reruns the
task of a worker that dies on another worker (``distributed``'s
``allowed-failures``, 3 by default). Our tasks write every file atomically and
are deterministic, so a rerun task writes the same bytes; the results come back
in completion order, each with its own key, and a progress bar follows the
futures as they finish.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, Sequence


#: The Dask setting by which a nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` to its workers (module doc).
_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _call(fn: Callable, args: tuple, threads: int):
    """A task as Dask runs it: the thread count set first (a worker process may be fresh)."""
    _set_threads(threads)
    return fn(*args)


def map_tasks(fn: Callable, arg_list: Sequence[tuple], workers: int = 1, scheduler: str | None = None,
              desc: str = "tasks", unit: str = "task", progress: bool = True,
              threads: int | None = None) -> Iterator[Any]:
    """``fn(*args)`` for every ``args`` of ``arg_list``, yielded as they finish (module doc).

    ``threads``: torch threads per task (default: this machine's cores divided by the workers; 1 on a
    running cluster, whose workers are usually one per core).
    A task that raises stops the run with its exception, as in a plain loop.
    """
    from tqdm.auto import tqdm

    from threeddx.errors import InputError

    if workers < 1:
        raise InputError("--workers must be at least 1")
    if not arg_list:
        return
    bar = tqdm(total=len(arg_list), desc=desc, unit=unit, disable=None if progress else True)
    threads = threads or (1 if scheduler else max(1, (os.cpu_count() or 1) // workers))
    try:
        if workers == 1 and scheduler is None:
            _set_threads(threads)
            for args in arg_list:
                yield fn(*args)
                bar.update()
            return
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise InputError("--workers N and --scheduler need Dask: pip install 'dask[distributed]'") from None
        import warnings

        # Dask's nannies set OMP_NUM_THREADS=1 and kin in this process's environment for their workers and
        # leave them there: every later subprocess of the caller would run single-threaded. Put them back.
        environ = dict(os.environ)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dashboard and port notices of a local cluster
            if scheduler is not None:
                try:
                    client = Client(scheduler, timeout="30s")
                except (OSError, TimeoutError) as e:
                    raise InputError(f"--scheduler {scheduler}: cannot reach a Dask scheduler ({e})") from None
                cluster = None
            else:
                # memory_limit=0: no Dask memory manager; a synthetic subject at 1 mm needs ~3 GB at its peak, and
                # Dask's default share (memory / workers) would restart workers mid-task on small machines
                import dask

                # The workers' processes share one multiprocessing resource tracker, started now with this
                # environment. A Ctrl-C can end a worker while it holds a semaphore; the tracker then frees it at
                # exit and says so ("resource_tracker: There appear to be 1 leaked semaphore objects"), a notice
                # about its own clean-up that would follow the one line a user is promised (cli.main).
                os.environ["PYTHONWARNINGS"] = ",".join(
                    w for w in (environ.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning") if w)
                # silence_logs CRITICAL: a Ctrl-C reaches the workers too, and a worker whose heartbeat then finds
                # the scheduler gone logs that with its traceback at ERROR; a task's own failure still reaches the
                # caller as its exception (future.result below)
                with dask.config.set({_TRIM: None}):  # module doc: glibc's own allocation policy in the workers
                    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, memory_limit=0, silence_logs=logging.CRITICAL)
                client = Client(cluster)
        try:
            futures = [client.submit(_call, fn, args, threads, pure=False) for args in arg_list]
            for future in as_completed(futures):
                yield future.result()
                bar.update()
                future.release()
        finally:
            # an interrupted run cancels its tasks: Dask's notices of that are not the user's concern (one line)
            log = logging.getLogger("distributed")
            level = log.level
            log.setLevel(logging.ERROR)
            try:
                client.close()
                if cluster is not None:
                    cluster.close()
            finally:
                log.setLevel(level)
            for key in set(os.environ) - set(environ):
                del os.environ[key]
            os.environ.update(environ)
    finally:
        bar.close()
