"""Running chains: store look-ups, chunks of stackable trials, the executor, storing every result.

Several sweeps may share one store: a chunk's trials are claimed in the store just before the chunk is
submitted (:meth:`batchscale.empirical.store.Store.claim`); trials another sweep holds under a live
lease are not trained here: this sweep waits for their rows (polling every :data:`POLL_SECONDS`), and
trains them itself only if that sweep's lease runs out or its process is gone (it was killed). Leases
are renewed while chunks run and released when the sweep ends, however it ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchscale.empirical.executors import Executor, ExecutorConfig, make_executor
from batchscale.empirical.store import (
    Store,
    config_hash,
    open_store,
    owner_id,
    record_from_result,
    record_matches,
)
from batchscale.empirical.sweep.rounds import Chain, Round
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.progress import counter

LEASE_SECONDS = 120.0  # a claim's lifetime; renewed every LEASE_SECONDS / 4 while its chunk runs
POLL_SECONDS = 2.0  # how often a sweep looks for rows of trials another sweep is training
WAIT_REPORT_SECONDS = 30.0  # how often it says it is still waiting


@contextmanager
def opened(
    store: Store | str | os.PathLike, executor: Executor | ExecutorConfig
) -> Iterator[tuple[Store, Executor]]:
    """``store`` and ``executor`` ready to use: a path is opened (and closed after), an
    :class:`ExecutorConfig` made into its executor (and shut down after); given objects are used as they
    are. Call it only after the sweep's config is validated, so that bad input never creates a store."""
    with contextlib.ExitStack() as stack:
        if not isinstance(store, Store):
            store = stack.enter_context(open_store(store))
        if isinstance(executor, ExecutorConfig):
            executor = stack.enter_context(make_executor(executor))
        yield store, executor


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a trial's numbers."""
    import torch

    from batchscale import __version__

    return {
        "batchscale": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def train_chunk(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker task: train one chunk of trials (one stacked group) and return JSON-able results.

    ``payload``: ``{"configs": [TrainConfig dicts], "threads": int, "prune": bool, "token": str}``, and
    optionally ``"bounds"`` (one step bound or None per config), ``"notes"`` and ``"median_seeds"`` (see
    :func:`~batchscale.empirical.engine.run_trials`).
    In a local pool worker each trial's result is also streamed to the parent the moment it ends
    (``{"token", "trial_id", "result", "started_at", "finished_at", "versions"}``), so the parent can
    store it before the whole chunk is done.
    """
    from batchscale.empirical.engine import run_trials
    from batchscale.empirical.executors import result_stream, set_threads

    set_threads(int(payload.get("threads", 1)))
    configs = [TrainConfig.from_dict(d) for d in payload["configs"]]
    started, versions, stream = time.time(), package_versions(), result_stream()

    def on_result(result: TrialResult) -> None:
        if stream is not None and payload.get("token") is not None:
            stream.put({"token": payload["token"], "trial_id": result.config.trial_id(),
                        "result": result.to_dict(), "started_at": started, "finished_at": time.time(),
                        "versions": versions})

    results = run_trials(configs, prune=bool(payload.get("prune", False)), on_result=on_result,
                         bounds=payload.get("bounds"), notes=tuple(payload.get("notes", ())),
                         median_seeds=payload.get("median_seeds"))
    return {
        "results": [r.to_dict() for r in results],
        "started_at": started,
        "finished_at": time.time(),
        "versions": versions,
        "pid": os.getpid(),
    }


def chunks_of(configs: Sequence[TrainConfig]) -> list[list[TrainConfig]]:
    """Split trials into stackable chunks: same :meth:`TrainConfig.group_key` (seeds of one configuration
    stack as extra copies; the engine's pruning compares trials of one seed only)."""
    groups: dict[tuple, list[TrainConfig]] = {}
    for trial in configs:
        groups.setdefault(trial.group_key(), []).append(trial)
    return list(groups.values())


@dataclass
class _ChainState:
    name: str
    chain: Chain
    round_: Round = field(default_factory=lambda: Round(()))
    results: dict[str, TrialResult] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # trial ids of the round without a result yet
    rows: list[dict[str, Any]] | None = None

    def accept(self, record: Any) -> bool:
        """Whether a stored row may stand for its trial in this round."""
        return not (self.round_.redo_pruned and record.status == "pruned")


@dataclass(frozen=True)
class RunStats:
    """What a :func:`run_chains` call did: trials trained, trials reused from the store, wall time, and
    per round phase (:attr:`Round.phase`) the trials trained and the optimizer steps they took
    (``phases``: ``{phase: (trials, steps)}``; a trial's steps are its ``stop_step``)."""

    trained: int
    reused: int
    wall_time: float
    session: str
    phases: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def plus(self, other: RunStats) -> RunStats:
        """Both runs' counts together (wall times added; this run's session)."""
        phases = dict(self.phases)
        for name, (trials, steps) in other.phases.items():
            old = phases.get(name, (0, 0))
            phases[name] = (old[0] + trials, old[1] + steps)
        return RunStats(self.trained + other.trained, self.reused + other.reused,
                        self.wall_time + other.wall_time, self.session, phases)

    def steps(self) -> int:
        """Optimizer steps trained, over every phase."""
        return sum(steps for _, steps in self.phases.values())


def run_chains(
    chains: Mapping[str, Chain],
    *,
    store: Store,
    executor: Executor,
    threads: int = 1,
    prune: bool = False,
    progress: Callable[[str], None] | None = None,
    session: str | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], RunStats]:
    """Drive every chain to its end; return ``({name: rows}, stats)``.

    Each round's trials are looked up in ``store`` first; the missing ones go to ``executor`` in chunks
    (one stacked group each), and every result is written to the store (one transaction per trial) as
    soon as the parent has it: when the trial ends (streamed by the local pool) or its chunk returns.
    """
    runner = _Runner(store, executor, threads, prune, progress, session or uuid.uuid4().hex[:12])
    states = [_ChainState(name, chain) for name, chain in chains.items()]
    try:
        with counter(progress, None, unit="trial", desc="trials") as runner.bar:
            for state in states:
                runner.advance(state)
            while runner.queue or runner.running or runner.watched:
                runner.submit_ready()
                runner.collect()
    finally:
        store.release(runner.owner)
    return {s.name: s.rows or [] for s in states}, runner.stats()


@dataclass
class _Job:
    """One chunk of one chain's round on its way through the executor."""

    state: _ChainState
    chunk: list[TrainConfig]
    prune: bool
    round_: Round = field(default_factory=lambda: Round(()))
    token: str = ""
    stored: set[str] = field(default_factory=set)  # trial ids already stored from the stream


class _Runner:
    """The parent's loop: advances chains, keeps the executor busy, stores every result it receives."""

    def __init__(self, store: Store, executor: Executor, threads: int, prune: bool,
                 progress: Callable[[str], None] | None, session: str):
        self.store, self.executor, self.threads, self.prune = store, executor, threads, prune
        self.say = progress or (lambda message: None)
        self.session = session
        self.owner = owner_id(session)
        self.queue: list[_Job] = []
        self.running: dict[Any, _Job] = {}
        self.watched: dict[str, tuple[_ChainState, TrainConfig, bool]] = {}  # claimed by other sweeps
        self.trained = self.reused = 0
        self.phases: dict[str, tuple[int, int]] = {}
        self.started = time.monotonic()
        self._serial = itertools.count()
        self._renewed = self._polled = self._reported = time.monotonic()
        self.bar: Any = None  # the progress counter of trials to train (set by run_chains)
        self.to_train = 0  # trials found missing in the store so far (the counter's total)

    def advance(self, state: _ChainState, results: dict[str, TrialResult] | None = None) -> None:
        """Feed ``results`` to the chain and queue the missing trials of its next round(s)."""
        while True:
            try:
                state.round_ = next(state.chain) if results is None else state.chain.send(results)
            except StopIteration as stop:
                state.rows = stop.value
                return
            configs = state.round_.configs
            wanted = _hashes(configs)
            stored = self.store.get_many(wanted)
            changed = sorted(k for k, r in stored.items() if not record_matches(r, wanted[k]))
            if changed:
                self.say(f"{state.name}: {len(changed)} stored row(s) do not match their trial's config "
                         f"(changed outside batchscale, or stale), e.g. {changed[0]}; training them again")
            state.results = {}
            self.take(state, {k: r for k, r in stored.items() if k not in changed and state.accept(r)})
            missing = [t for t in configs if t.trial_id() not in state.results]
            if missing:
                state.pending = {t.trial_id() for t in missing}
                self.to_train += len(missing)
                self.bar.set_total(self.to_train)
                prune = self.prune and state.round_.prune
                self.queue.extend(_Job(state, chunk, prune, state.round_) for chunk in chunks_of(missing))
                return
            results = state.results

    def take(self, state: _ChainState, records: Mapping[str, Any]) -> None:
        """Use stored rows as results of ``state``'s round."""
        for trial_id, record in records.items():
            state.results[trial_id] = TrialResult.from_dict(record.result_dict())
            if trial_id in state.pending:
                state.pending.discard(trial_id)
                self.bar.update()  # stored meanwhile (by another sweep): settled without training
        self.reused += len(records)

    def claim(self, state: _ChainState, chunk: Sequence[TrainConfig], prune: bool,
              announce: bool = True) -> list[TrainConfig]:
        """Claim ``chunk`` in the store; return the trials this sweep is to train.

        Trials stored meanwhile are taken as results; those another sweep holds are watched."""
        outcome = self.store.claim(_hashes(chunk), self.owner, lease=LEASE_SECONDS, accept=state.accept)
        self.take(state, outcome.reused)
        by_id = {t.trial_id(): t for t in chunk}
        self.watched.update((k, (state, by_id[k], prune)) for k in outcome.others)
        if outcome.others and announce:
            holders = sorted(set(outcome.others.values()))
            self.say(f"{state.name}: {len(outcome.others)} trial(s) are being trained by another sweep "
                     f"({', '.join(holders)}); waiting for their rows")
        if not state.pending:
            self.advance(state, state.results)
        return [by_id[k] for k in outcome.ours]

    def submit_ready(self) -> None:
        """Claim queued chunks and hand them to the executor, up to its capacity."""
        jobs: list[_Job] = []
        while self.queue and len(self.running) + len(jobs) < self.executor.capacity:
            job = self.queue.pop(0)
            job.chunk = self.claim(job.state, job.chunk, job.prune)
            if job.chunk:
                job.token = f"{self.session}-{next(self._serial)}"
                jobs.append(job)
        payloads = [_payload(job.chunk, job.prune, self.threads, job.token, job.round_) for job in jobs]
        self.running.update(zip(self.executor.submit_many(train_chunk, payloads), jobs, strict=True))

    def collect(self) -> None:
        """Store streamed trials, finish the chunks that ended (waiting up to a second for one), renew
        this sweep's claims and look for rows of trials other sweeps are training."""
        if self.running:
            done = self.executor.wait(list(self.running), timeout=1.0)
        else:
            done = []
            time.sleep(min(1.0, POLL_SECONDS))
        self.store_streamed(self.executor.drain())
        for handle in done:
            self.finish(self.running.pop(handle), self.executor.result(handle))
        now = time.monotonic()
        if self.running and now - self._renewed > LEASE_SECONDS / 4:
            self.store.renew(self.owner, LEASE_SECONDS)
            self._renewed = now
        if self.watched and now - self._polled >= POLL_SECONDS:
            self._polled = now
            self.poll_watched()

    def poll_watched(self) -> None:
        """Take the rows other sweeps stored; claim (to train here) trials whose claims expired."""
        watched, self.watched = self.watched, {}
        by_state: dict[int, list[tuple[_ChainState, TrainConfig, bool]]] = {}
        for entry in watched.values():
            by_state.setdefault(id(entry[0]), []).append(entry)
        for entries in by_state.values():
            state, prune = entries[0][0], entries[0][2]
            mine = self.claim(state, [config for _, config, _ in entries], prune, announce=False)
            self.queue.extend(_Job(state, chunk, prune, state.round_) for chunk in chunks_of(mine))
        if self.watched and time.monotonic() - self._reported >= WAIT_REPORT_SECONDS:
            self._reported = time.monotonic()
            self.say(f"[{time.monotonic() - self.started:7.1f}s] still waiting for {len(self.watched)} "
                     "trial(s) another sweep is training")

    def store_streamed(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Store trials streamed by running chunks (messages of finished chunks are left to the chunk)."""
        jobs = {job.token: job for job in self.running.values()}
        for message in messages:
            job = jobs.get(message["token"])
            if job is None or message["trial_id"] in job.stored:
                continue
            self.store.put(record_from_result(
                message["trial_id"], message["result"], started_at=message["started_at"],
                finished_at=message["finished_at"], versions=message["versions"], session=self.session,
            ))
            job.stored.add(message["trial_id"])
            self.bar.update()

    def finish(self, job: _Job, out: Mapping[str, Any]) -> None:
        """Store the chunk's remaining results; advance its chain when its round is complete."""
        _store_chunk(self.store, job.chunk, out, self.session, job.state.results, skip=job.stored)
        self.trained += len(job.chunk)
        self.bar.update(len(job.chunk) - len(job.stored))
        trials, steps = self.phases.get(job.round_.phase, (0, 0))
        done = sum(r.get("stop_step") or 0 for r in out["results"])
        self.phases[job.round_.phase] = (trials + len(job.chunk), steps + done)
        self.say(_chunk_message(job.state.name, job.chunk, out, time.monotonic() - self.started))
        job.state.pending.difference_update(t.trial_id() for t in job.chunk)
        if not job.state.pending:
            self.advance(job.state, job.state.results)

    def stats(self) -> RunStats:
        return RunStats(self.trained, self.reused, time.monotonic() - self.started, self.session,
                        dict(self.phases))


def _hashes(configs: Sequence[TrainConfig]) -> dict[str, str]:
    """``{trial_id: config_hash}`` of ``configs``."""
    return {t.trial_id(): config_hash(t.to_dict()) for t in configs}


def _payload(chunk: Sequence[TrainConfig], prune: bool, threads: int, token: str,
             round_: Round | None = None) -> dict[str, Any]:
    """The picklable task of one chunk (see :func:`train_chunk`), with its round's bounds and notes."""
    payload = {"configs": [t.to_dict() for t in chunk], "threads": threads, "prune": prune, "token": token}
    if round_ is not None and round_.bounds:
        payload["bounds"] = [round_.bounds.get(t.trial_id()) for t in chunk]
    if round_ is not None and round_.notes:
        payload["notes"] = list(round_.notes)
    if round_ is not None and round_.median_seeds is not None:
        payload["median_seeds"] = round_.median_seeds
    return payload


def _store_chunk(store: Store, chunk: list[TrainConfig], out: Mapping[str, Any], session: str,
                 into: dict[str, TrialResult], skip: set[str] = frozenset()) -> None:
    for trial, result in zip(chunk, out["results"], strict=True):
        trial_id = trial.trial_id()
        into[trial_id] = TrialResult.from_dict(result)
        if trial_id in skip:
            continue
        record = record_from_result(
            trial_id,
            result,
            started_at=out.get("started_at"),
            finished_at=out.get("finished_at"),
            versions=out.get("versions"),
            session=session,
        )
        store.put(record)


def _chunk_message(name: str, chunk: list[TrainConfig], out: Mapping[str, Any], elapsed: float) -> str:
    results = out["results"]
    reached = [r["steps"] for r in results if r["status"] == "complete" and r["steps"] is not None]
    best = f"best {min(reached)} steps" if reached else "target not reached"
    if chunk[0].target is None:
        finals = [r["final_metric"] for r in results if r["final_metric"] is not None]
        best = f"best final {chunk[0].target_metric} {min(finals):.4g}" if finals else "all diverged"
    rates = [t.learning_rate for t in chunk]
    return (
        f"[{elapsed:7.1f}s] {name}: B={chunk[0].batch_size} {len(chunk)} trials "
        f"lr {min(rates):.3g}..{max(rates):.3g}: {best}"
    )


def with_sweep_config(rows: Sequence[Mapping[str, Any]], sweep: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows with the sweep's resolved config attached under ``sweep``."""
    return [{**row, "sweep": dict(sweep)} for row in rows]
