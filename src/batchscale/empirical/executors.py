"""Where chunks of trials run: a local process pool, this process, submitit (Slurm) or Ray.

An executor runs a module-level function on picklable payloads (a chunk of trial configs) and hands each
result back to the parent as soon as its chunk ends; the parent writes it to the results store. All
executors share one small interface (:class:`Executor`): ``submit``, ``submit_many``, ``wait``,
``result``, ``shutdown``, and ``capacity`` (how many chunks it is worth keeping in flight).

- ``local`` (default): a ``spawn`` process pool with one worker per core; each worker trains with
  ``torch.set_num_threads(threads)`` (1 by default) and exits by itself if the parent dies (SIGKILL).
- ``inline``: runs every chunk in this process, one at a time (debugging, tiny sweeps).
- ``submitit``: one job per chunk (a Slurm job array when several chunks are ready at once) through
  ``submitit.AutoExecutor``; ``cluster=local`` or ``cluster=debug`` run here without Slurm. Extra: ``slurm``.
- ``ray``: one Ray task per chunk on ``ray.init(address=...)`` (default: a local instance). Extra: ``ray``.

Local pool workers ignore Ctrl-C (SIGINT): the parent alone gets the ``KeyboardInterrupt``, and leaving the
executor's ``with`` block on it stops the workers at once (queued chunks are cancelled, running ones
killed; what a worker already streamed back is kept). The pool uses ``spawn``, which re-imports the
script that started it: from a script whose top-level code is not under ``if __name__ == "__main__":``,
:func:`make_executor` falls back to the inline executor and warns; likewise when a workload was
registered from the session itself (a notebook cell), which the workers could not import.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchscale.errors import InputError

EXECUTORS = ("local", "inline", "submitit", "ray")

# In a local pool worker: the queue on which a task may stream partial results (one per finished trial)
# back to the parent before the task ends. Set once per worker process by its initializer; None elsewhere.
_STREAM: Any = None
EXTRAS = {"submitit": ("submitit", "slurm"), "ray": ("ray", "ray")}  # executor -> (module, pip extra)
# -X keys each executor accepts (None: any, checked by the engine itself when the executor starts)
OPTION_KEYS: dict[str, tuple[str, ...] | None] = {
    "local": (), "inline": (), "submitit": None, "ray": ("address",),
}


@dataclass(frozen=True)
class ExecutorConfig:
    """How to run chunks: the executor's name, its parallelism and engine-specific options.

    ``workers`` None means one per core (``local``) or as many as the engine accepts (``submitit``,
    ``ray``: 2 * cores chunks in flight). ``options`` are KEY=VALUE pairs passed to the engine:
    ``cluster``, ``timeout_min``, ``slurm_partition``, ... for submitit; ``address`` for Ray.
    """

    name: str = "local"
    workers: int | None = None
    threads: int = 1
    folder: str = "batchscale-out/executor"
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def validate(self) -> ExecutorConfig:
        """Raise :class:`InputError` on an unknown executor, bad counts or a missing extra."""
        if self.name not in EXECUTORS:
            raise InputError(f"unknown executor {self.name!r}; expected one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")
        if self.threads < 1:
            raise InputError(f"threads per worker must be >= 1, got {self.threads}")
        allowed = OPTION_KEYS[self.name]
        unknown = sorted(k for k, _ in self.options if allowed is not None and k not in allowed)
        if unknown:
            valid = ", ".join(allowed) if allowed else "none"
            raise InputError(
                f"unknown executor option(s) {', '.join(unknown)} for --executor {self.name}; valid: {valid}"
            )
        require_extra(self.name)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored with sweep results)."""
        return {
            "name": self.name,
            "workers": self.workers,
            "threads": self.threads,
            "options": dict(self.options),
        }


def require_extra(name: str) -> None:
    """Raise a one-line :class:`InputError` naming the pip extra when an executor's engine is missing."""
    if name not in EXTRAS:
        return
    module, extra = EXTRAS[name]
    if importlib.util.find_spec(module) is None:
        raise InputError(
            f"--executor {name} needs the optional package {module!r}: pip install 'batchscale[{extra}]'"
        )


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Limit torch (and BLAS through the environment) to ``threads`` threads in this process."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import torch

    torch.set_num_threads(threads)


def probe(payload: Any) -> dict[str, Any]:
    """A tiny task for checking an executor: where it ran, its torch threads (None when the worker has not
    imported torch), and ``payload`` echoed."""
    torch = sys.modules.get("torch")
    threads = None if torch is None else torch.get_num_threads()
    return {"pid": os.getpid(), "threads": threads, "payload": payload}


class Executor:
    """Interface shared by every executor (see the module docstring)."""

    capacity: int = 1

    def submit(self, fn: Callable[[Any], Any], payload: Any) -> Any:
        raise NotImplementedError

    def submit_many(self, fn: Callable[[Any], Any], payloads: Sequence[Any]) -> list[Any]:
        """Submit several payloads at once (a job array where the engine has one)."""
        return [self.submit(fn, p) for p in payloads]

    def wait(self, handles: Sequence[Any], timeout: float = 1.0) -> list[Any]:
        """The handles among ``handles`` that have finished, waiting up to ``timeout`` s for one."""
        raise NotImplementedError

    def result(self, handle: Any) -> Any:
        """The finished handle's return value (re-raises the task's exception)."""
        raise NotImplementedError

    def drain(self) -> list[Any]:
        """Partial results streamed by running tasks since the last call (local pool only)."""
        return []

    def shutdown(self) -> None:
        """Release the workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()


class InlineExecutor(Executor):
    """Runs each chunk immediately in this process."""

    def __init__(self, threads: int):
        self.threads = threads
        self.capacity = 1

    def submit(self, fn: Callable[[Any], Any], payload: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(payload))
        except Exception as exc:  # noqa: BLE001 - handed back through the future like a pool would
            future.set_exception(exc)
        return future

    def wait(self, handles: Sequence[Any], timeout: float = 1.0) -> list[Any]:
        return [h for h in handles if h.done()]

    def result(self, handle: cf.Future) -> Any:
        return handle.result()


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Exit this worker as soon as its parent is gone (the parent was killed)."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(interval)


def _init_local_worker(parent_pid: int, threads: int, stream: Any) -> None:
    global _STREAM
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers itself
    _STREAM = stream
    set_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def result_stream() -> Any:
    """The queue a task running in a local pool worker may ``put`` partial results on, else None."""
    return _STREAM


class LocalExecutor(Executor):
    """A ``spawn`` process pool; workers use ``threads`` torch threads and die with their parent."""

    def __init__(self, workers: int, threads: int):
        self.capacity = workers
        context = multiprocessing.get_context("spawn")
        self._stream = context.SimpleQueue()  # put() writes synchronously: nothing lags behind a result
        self._pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_local_worker,
            initargs=(os.getpid(), threads, self._stream),
        )

    def submit(self, fn: Callable[[Any], Any], payload: Any) -> cf.Future:
        return self._pool.submit(fn, payload)

    def wait(self, handles: Sequence[Any], timeout: float = 1.0) -> list[Any]:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: cf.Future) -> Any:
        return handle.result()

    def drain(self) -> list[Any]:
        """Partial results the workers' tasks streamed since the last call."""
        messages = []
        while self._stream is not None and not self._stream.empty():
            messages.append(self._stream.get())
        return messages

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.terminate()
        self.shutdown()

    def shutdown(self) -> None:
        """Cancel queued chunks, wait for running ones; meanwhile discard what they stream, so a worker
        blocked on a full stream pipe cannot hang the shutdown."""
        if self._stream is None:
            return
        stop = threading.Event()
        sink = threading.Thread(target=self._discard_stream, args=(stop,), daemon=True)
        sink.start()
        self._pool.shutdown(wait=True, cancel_futures=True)
        stop.set()
        sink.join()
        self._stream.close()
        self._stream = None

    def terminate(self) -> None:
        """Stop the workers at once (Ctrl-C): the trials they were training are lost, finished ones were
        streamed to the parent already; queued chunks are cancelled."""
        processes = list((getattr(self._pool, "_processes", None) or {}).values())  # no public kill
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)

    def _discard_stream(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self._stream.empty():
                time.sleep(0.05)
            else:
                self._stream.get()


class SubmititExecutor(Executor):
    """One submitit job per chunk; several chunks submitted together form a job array."""

    def __init__(self, folder: str, workers: int, threads: int, options: dict[str, Any]):
        import submitit

        options = dict(options)
        cluster = options.pop("cluster", None)
        self._executor = submitit.AutoExecutor(folder=Path(folder) / "submitit", cluster=cluster)
        parameters = {"timeout_min": 60, "cpus_per_task": threads} | options
        if cluster in ("local", "debug"):
            parameters.pop("cpus_per_task")
        try:
            self._executor.update_parameters(**parameters)
        except (ValueError, TypeError) as exc:
            raise InputError(f"bad submitit option: {str(exc).splitlines()[0]}") from None
        self.capacity = workers

    def submit(self, fn: Callable[[Any], Any], payload: Any) -> Any:
        return self._executor.submit(fn, payload)

    def submit_many(self, fn: Callable[[Any], Any], payloads: Sequence[Any]) -> list[Any]:
        if len(payloads) <= 1:
            return [self.submit(fn, p) for p in payloads]
        return list(self._executor.map_array(fn, list(payloads)))

    def wait(self, handles: Sequence[Any], timeout: float = 1.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.2, timeout))

    def result(self, handle: Any) -> Any:
        return handle.result()

    def shutdown(self) -> None:
        """Jobs keep their results on disk; nothing to release."""


class RayExecutor(Executor):
    """One Ray task per chunk on ``ray.init(address=...)``."""

    def __init__(self, workers: int, threads: int, options: dict[str, Any]):
        import ray

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=options.get("address"), include_dashboard=False, log_to_driver=False)
        self._threads = threads
        self._remotes: dict[Callable, Any] = {}
        self.capacity = workers

    def _remote(self, fn: Callable[[Any], Any]) -> Any:
        if fn not in self._remotes:
            self._remotes[fn] = self._ray.remote(num_cpus=self._threads)(fn)
        return self._remotes[fn]

    def submit(self, fn: Callable[[Any], Any], payload: Any) -> Any:
        return self._remote(fn).remote(payload)

    def wait(self, handles: Sequence[Any], timeout: float = 1.0) -> list[Any]:
        ready, _ = self._ray.wait(list(handles), num_returns=1, timeout=timeout)
        ready_set = set(ready)
        return [h for h in handles if h in ready_set]

    def result(self, handle: Any) -> Any:
        return self._ray.get(handle)

    def shutdown(self) -> None:
        """Disconnect from (and stop, if this executor started it) the Ray instance."""
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()


def main_reimports_unguarded() -> bool:
    """True when ``spawn`` workers would re-run the top level of the script that started this process: it
    is a file whose text never tests ``__name__ == "__main__"`` (an interactive session has no file)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    return "__main__" not in text


def session_workloads() -> list[str]:
    """Workloads registered from the interactive session or script itself (a notebook cell, ``python -c``):
    spawn workers start a fresh interpreter that never ran that code, so they cannot build them."""
    registry = getattr(sys.modules.get("batchscale.empirical.workloads"), "_REGISTRY", {})
    return [name for name, entry in registry.items()
            if getattr(entry.factory, "__module__", "") == "__main__"]


def _fall_back(why: str, threads: int) -> InlineExecutor:
    message = f"batchscale: {why}; running in this process instead (inline)."
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return InlineExecutor(threads)


def make_executor(config: ExecutorConfig | str) -> Executor:
    """The executor described by ``config`` (or just its name, e.g. ``"inline"``; validated first); use it
    as a context manager. ``local`` from a script without an ``if __name__ == "__main__":`` guard falls back
    to ``inline`` with a warning (spawn would run the script again in every worker), and so does ``local``
    when a workload was registered from the session itself (a notebook): the workers could not build it."""
    if isinstance(config, str):
        config = ExecutorConfig(name=config)
    config.validate()
    cores = cpu_count()
    if config.name == "local" and main_reimports_unguarded():
        return _fall_back(
            "the local process pool re-imports the main script in every worker, and this script has no "
            "`if __name__ == \"__main__\":` guard (put its top-level code under one to use the pool)",
            config.threads,
        )
    if config.name == "local" and session_workloads():
        return _fall_back(
            f"workload(s) {', '.join(session_workloads())} were registered from this session (__main__), "
            "which the local pool's workers cannot import (define them in a module to use the pool)",
            config.threads,
        )
    if config.name == "inline":
        return InlineExecutor(config.threads)
    if config.name == "local":
        return LocalExecutor(config.workers or max(1, cores // config.threads), config.threads)
    if config.name == "submitit":
        workers = config.workers or 2 * cores
        return SubmititExecutor(config.folder, workers, config.threads, dict(config.options))
    return RayExecutor(config.workers or 2 * cores, config.threads, dict(config.options))


def map_unordered(
    executor: Executor, fn: Callable[[Any], Any], payloads: Sequence[Any], timeout: float = 1.0
):
    """Yield ``(index, result)`` as each payload's task ends, keeping ``executor.capacity`` in flight."""
    pending = list(enumerate(payloads))
    running: dict[Any, int] = {}
    while pending or running:
        free = max(0, executor.capacity - len(running))
        batch, pending = pending[:free], pending[free:]
        for (index, _), handle in zip(batch, executor.submit_many(fn, [p for _, p in batch]), strict=True):
            running[handle] = index
        for handle in executor.wait(list(running), timeout):
            yield running.pop(handle), executor.result(handle)
