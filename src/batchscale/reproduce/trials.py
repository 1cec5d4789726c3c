"""Every trial of a reproduction goes to the results store (``--db``, default
:data:`batchscale.reproduce.report.DEFAULT_STORE`, the file ``batchscale sweep`` and ``batchscale verify``
use): a trial already stored is reused, a new one is written the moment it ends. So re-running the same
command trains nothing new, and a run interrupted by Ctrl-C resumes where it stopped.

:func:`train_stored` runs a fixed list of :class:`batchscale.empirical.trials.TrainConfig` through the
engine and the store (one round of :func:`batchscale.empirical.sweep.run_chains`, in this process);
:func:`sweep_stored` runs a :class:`batchscale.empirical.sweep.StepsSweepConfig` the same way.
:class:`Tally` counts what a reproduction trained and reused, for its report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchscale.reproduce.report import Options


@dataclass
class Tally:
    """Trials trained and reused from the store during one reproduction (summed over its calls)."""

    store: str
    trained: int = 0
    reused: int = 0

    def add(self, stats: Any) -> None:
        self.trained += int(stats.trained)
        self.reused += int(stats.reused)

    def text(self) -> str:
        return f"{self.trained} trials trained, {self.reused} reused from the store {self.store}"

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "trials_trained": self.trained, "trials_reused": self.reused}


def prepare_store(options: Options) -> str:
    """The store's path, checked (an InputError for a foreign, damaged or unwritable file, before any
    training) and its folder created."""
    from batchscale.empirical.store import check_store_file

    path = Path(options.store)
    check_store_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def train_stored(options: Options, configs: Sequence[Any], label: str,
                 tally: Tally | None = None) -> list[Any]:
    """The :class:`TrialResult` of every config (in order), trained through the engine in this process
    with the store of ``options``: stored trials are reused, each new one is stored as it ends."""
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep import Round, run_chains
    from batchscale.empirical.sweep.runner import opened

    configs = list(configs)

    def chain():
        results = yield Round(tuple(configs), prune=False)
        return [{"result": results[c.trial_id()]} for c in configs]

    with opened(prepare_store(options), ExecutorConfig(name="inline")) as (store, executor):
        rows, stats = run_chains({label: chain()}, store=store, executor=executor, progress=options.say)
    if tally is not None:
        tally.add(stats)
    return [r["result"] for r in rows[label]]


def sweep_stored(options: Options, config: Any, tally: Tally | None = None
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of :func:`batchscale.empirical.sweep.run_steps_sweep` for ``config`` (``--target auto``
    not supported), run in this process with the store of ``options``, and every
    :class:`TrialResult` the sweep used, by trial id (each with its metric history)."""
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep import run_chains, steps_sweep_chains
    from batchscale.empirical.sweep.runner import opened
    from batchscale.errors import require

    require(config.target_fraction is None, "a reproduction's sweep needs a fixed target")
    config.validate()
    seen: dict[str, Any] = {}

    def recording(chain):
        """``chain`` unchanged, keeping every result sent to it."""
        try:
            round_ = next(chain)
            while True:
                results = yield round_
                seen.update(results)
                round_ = chain.send(results)
        except StopIteration as stop:
            return stop.value

    chains = {name: recording(chain) for name, chain in steps_sweep_chains(config).items()}
    with opened(prepare_store(options), ExecutorConfig(name="inline")) as (store, executor):
        rows, stats = run_chains(chains, store=store, executor=executor, prune=config.prune,
                                 progress=options.say)
    if tally is not None:
        tally.add(stats)
    return [row for name in config.optimizers for row in rows[name]], seen


MEASURED_FOLDER = "reproduce-measurements"
MEASURED_FORMAT = "batchscale-reproduce-measurement"


def measured_beside_store(options: Options, name: str, settings: dict[str, Any], compute: Any) -> Any:
    """A measurement that is not a trial (e.g. noise scales along a training run): ``compute()`` (its result
    JSON-able), kept as JSON beside the store in ``MEASURED_FOLDER/<name>-<key>.json`` so a re-run (or a
    resumed one) reads it instead of training again. The key hashes ``settings``, the package's source
    (every ``.py`` file) and the package versions, so any change of code or settings measures again; an
    unreadable or foreign file is measured again and replaced."""
    import json

    from batchscale.verify.reuse import digest_key, write_atomically

    key = digest_key({"name": name, "settings": settings})
    path = Path(options.store).parent / MEASURED_FOLDER / f"{name}-{key}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("format") == MEASURED_FORMAT and data.get("key") == key:
            options.say(f"{name}: reused from {path}")
            return data["value"]
    except (OSError, ValueError, AttributeError):
        pass
    value = compute()
    write_atomically(path, json.dumps({"format": MEASURED_FORMAT, "key": key, "settings": settings,
                                       "value": value}, default=str))
    return value
