"""Where tasks run: serially, in a process pool, or on Ray."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from milpverify.errors import SolverError
from milpverify.runs.tasks import RunSpec, TaskResult, run_task

#: Environment of worker processes: one BLAS / OpenMP thread each (workers are the parallelism).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _init_worker() -> None:
    """Process-pool initializer: die with the parent (Linux), one thread per library, and
    end without the interpreter's teardown (`_exit_now`)."""
    os.environ.update(WORKER_ENV)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        with contextlib.suppress(OSError, AttributeError):
            # PR_SET_PDEATHSIG = 1: a SIGKILLed parent must not leave solvers running.
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    import atexit
    atexit.register(_exit_now)


def _exit_now() -> None:
    """End a worker once its loop has returned, skipping the interpreter's teardown.

    A worker reaches exit only after the pool's shutdown sentinel, when every result has
    been sent through the (synchronous) result pipe, so nothing is lost; but the teardown
    of torch, onnxruntime and SCIP takes 1-2 s per worker, and `pool.shutdown(wait=True)`
    (and so every parallel run) waited for it. Output still buffered in Python or in C
    stdio (a solver log under ``--verbose``) is flushed first.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or replaced stream: nothing to flush
            stream.flush()
    with contextlib.suppress(OSError, AttributeError, TypeError):  # TypeError: no libc (Windows)
        import ctypes
        ctypes.CDLL(None).fflush(None)
    os._exit(0)


# ---------------------------------------------------------------------------- executors
TaskList = list[tuple[int, str]]


def _serial(spec: RunSpec, tasks: TaskList) -> Iterator[TaskResult]:
    for index, method in tasks:
        yield run_task(spec, index, method)


@contextlib.contextmanager
def _worker_environment() -> Iterator[None]:
    """Set `WORKER_ENV` while workers are spawned (they read it before importing numpy)."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _process_pool(spec: RunSpec, tasks: TaskList, workers: int) -> Iterator[TaskResult]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker (no forked SCIP / torch / onnxruntime state).
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_init_worker)
    try:
        # Spawned workers start inside `submit`; they must see WORKER_ENV before numpy loads.
        with _worker_environment():
            pending = {pool.submit(run_task, spec, i, m) for i, m in tasks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BrokenProcessPool as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise SolverError(f"A worker process died ({exc}); the rows written so far are kept. "
                          "Rerun the same command to resume.") from exc
    except BaseException:
        # Interrupted (Ctrl-C, or the consumer failed): do not wait for running solves.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _ray_tasks(spec: RunSpec, tasks: TaskList, address: str, workers: int
               ) -> Iterator[TaskResult]:
    try:
        import ray
    except ImportError as exc:
        raise SolverError("--ray needs the ray package, which is not installed "
                          "(pip install 'milpverify[ray]').") from exc
    started = False
    if not ray.is_initialized():
        env = {"env_vars": dict(WORKER_ENV)}
        if address == "local":
            ray.init(num_cpus=workers, include_dashboard=False, runtime_env=env,
                     log_to_driver=False)
        else:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        pending = [remote.remote(spec, i, m) for i, m in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()
