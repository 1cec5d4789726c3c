"""Reader for the released data of Shallue et al. 2018 (arXiv 1811.03600), and their Figure 1 from it.

The archive (``batch_science_data.tar.bz2``, documented in the README of the ``batch_science/`` folder of
the github.com/google-research/google-research repository) unpacks into ``batch_science/`` with one
folder per workload (dataset, model, optimizer) and one per study (one batch size)::

    dataset/model/optimizer/batch_size/study.json
    dataset/model/optimizer/batch_size/trial_id/metadata.json
    dataset/model/optimizer/batch_size/trial_id/measurements.csv

``study.json`` holds ``batch_size``, ``dataset``, ``model``, ``optimizer``, ``train_steps`` (and the search
space, ``parameter_configs``); ``metadata.json`` holds ``trial_id``, ``status`` (``COMPLETE``,
``INCOMPLETE`` or ``INFEASIBLE``: diverged), ``steps`` and ``parameters`` (the trial's learning rate,
momentum, ...); ``measurements.csv`` has a ``step`` column and one column per metric (e.g.
``val/classification_error``), at evaluation steps that need not be evenly spaced. Study and trial folder
names are integers.

Steps to a result follow the authors' published procedure (their ``measurement_utils`` and the Figure 1
cell of their notebook ``reproduce_paper_plots.ipynb``): per batch size, the first ``num_trials``
``COMPLETE`` trials in trial-folder order; the smallest evaluation step at which any of them has the
metric strictly below the target (strictly above for a metric to maximize), ties going to the lower
trial id. Standard library only (no pandas).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchscale.errors import InputError

STATUSES = ("COMPLETE", "INCOMPLETE", "INFEASIBLE")
ARCHIVE_FOLDER = "batch_science"  # what the archive unpacks into


@dataclass(frozen=True)
class Goal:
    """One panel of the paper's Figure 1: the workload folder, its title, the validation metric and the
    target (``maximize``: reached when the metric exceeds it), and how many trials per batch size the
    authors' notebook used."""

    folder: str
    title: str
    metric: str
    target: float
    maximize: bool = False
    num_trials: int = 100

    def text(self) -> str:
        return f"{self.metric} {'>' if self.maximize else '<'} {self.target:g}"


# The nine panels of Figure 1, as the authors' notebook computes them (folder, metric, target, trials).
FIGURE1: tuple[Goal, ...] = (
    Goal("mnist/simple_cnn_base/nesterov_momentum", "Simple CNN on MNIST", "val/classification_error", 0.01),
    Goal("fashion_mnist/simple_cnn_base/nesterov_momentum", "Simple CNN on Fashion MNIST",
         "val/classification_error", 0.1),
    Goal("cifar_10/resnet_8/nesterov_momentum", "ResNet-8 on CIFAR-10", "val/classification_error", 0.3),
    Goal("imagenet/resnet_50/nesterov_momentum", "ResNet-50 on ImageNet", "val/classification_error", 0.25),
    Goal("open_images_v4/resnet_50/nesterov_momentum", "ResNet-50 on Open Images", "val/average_precision",
         0.31, maximize=True),
    Goal("lm1b/transformer_base/nesterov_momentum", "Transformer on LM1B", "val/cross_entropy_error", 3.9),
    Goal("common_crawl/transformer_base/nesterov_momentum", "Transformer on Common Crawl",
         "val/cross_entropy_error", 3.9, num_trials=50),
    Goal("imagenet/vgg_11/nesterov_momentum", "VGG-11 on ImageNet", "val/classification_error", 0.35),
    Goal("lm1b/lstm/nesterov_momentum", "LSTM on LM1B", "val/cross_entropy_error", 3.9, num_trials=50),
)


@dataclass(frozen=True)
class Trial:
    """One training run: its id, status, steps trained, metaparameters and (for the trials read) the
    evaluation steps and the metric at each, in step order."""

    trial_id: int
    status: str
    steps: int | None
    parameters: Mapping[str, Any]
    eval_steps: tuple[int, ...] = ()
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class Study:
    """One batch size of a workload: the study's fields, the counts of every status and the trials read
    (the first ``num_trials`` COMPLETE ones)."""

    folder: Path
    batch_size: int
    dataset: str
    model: str
    optimizer: str
    train_steps: int | None
    status_counts: Mapping[str, int]
    trials: tuple[Trial, ...]


@dataclass(frozen=True)
class Result:
    """Steps to the goal at one batch size: the fewest ``steps`` (None: no trial read reached it), the
    ``trial_id`` that reached it first, its learning rate (if recorded), and the trials read."""

    batch_size: int
    steps: int | None
    trial_id: int | None
    learning_rate: float | None
    trials_read: int


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a missing or unreadable file is one :class:`InputError` naming it."""
    if not path.is_file():
        raise InputError(f"missing file {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def field(data: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise InputError(f"{path}: no field {key!r}")
    return data[key]


def read_measurements(path: Path, metric: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(steps, values) of ``metric`` in ``path`` (``measurements.csv``), sorted by step; empty or
    non-numeric cells are skipped. A missing file or column is one :class:`InputError` naming it."""
    if not path.is_file():
        raise InputError(f"missing file {path}")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for name in ("step", metric):
                if name not in columns:
                    raise InputError(f"{path}: no column {name!r} (columns: {', '.join(columns) or 'none'})")
            pairs = []
            for line, row in enumerate(reader, start=2):
                try:
                    step = int(float(row["step"]))
                except (TypeError, ValueError):
                    raise InputError(f"{path}, line {line}: step {row['step']!r} is not a number") from None
                try:
                    value = float(row[metric])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    pairs.append((step, value))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    pairs.sort()
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def integer_folders(folder: Path, what: str) -> list[Path]:
    """The sub-folders of ``folder``, sorted by their integer names (the archive's study and trial
    folders); a sub-folder with another name is an :class:`InputError`."""
    out = []
    for child in folder.iterdir():
        if child.is_dir():
            try:
                out.append((int(child.name), child))
            except ValueError:
                raise InputError(f"{child}: {what} folder names are integers, got {child.name!r}") from None
    if not out:
        raise InputError(f"no {what} folders in {folder}")
    return [p for _, p in sorted(out)]


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def load_study(folder: Path, metric: str, num_trials: int | None = None) -> Study:
    """The study in ``folder``: ``study.json``, every trial's ``metadata.json`` (statuses counted), and
    ``measurements.csv`` (``metric``) of the first ``num_trials`` COMPLETE trials (all when None)."""
    path = folder / "study.json"
    study = read_json(path)
    counts = dict.fromkeys(STATUSES, 0)
    trials = []
    for trial_folder in integer_folders(folder, "trial"):
        meta_path = trial_folder / "metadata.json"
        meta = read_json(meta_path)
        status = field(meta, "status", meta_path)
        if status not in STATUSES:
            raise InputError(f"{meta_path}: status {status!r}, expected one of {', '.join(STATUSES)}")
        counts[status] += 1
        if status != "COMPLETE" or (num_trials is not None and len(trials) >= num_trials):
            continue
        steps, values = read_measurements(trial_folder / "measurements.csv", metric)
        trials.append(Trial(int(field(meta, "trial_id", meta_path)), status, optional_int(meta.get("steps")),
                            dict(meta.get("parameters") or {}), steps, values))
    return Study(folder, int(field(study, "batch_size", path)), str(study.get("dataset", "")),
                 str(study.get("model", "")), str(study.get("optimizer", "")),
                 optional_int(study.get("train_steps")), counts, tuple(trials))


def load_workload(folder: Path, metric: str, num_trials: int | None = None) -> tuple[Study, ...]:
    """Every study (batch size) of the workload folder, in batch-size order."""
    if not folder.is_dir():
        raise InputError(f"missing folder {folder}")
    studies = [load_study(f, metric, num_trials) for f in integer_folders(folder, "study")]
    return tuple(sorted(studies, key=lambda s: s.batch_size))


def reached(value: float, target: float, maximize: bool) -> bool:
    """The authors' test: strictly below the target (strictly above when maximizing)."""
    return value > target if maximize else value < target


def steps_to_result(study: Study, target: float, maximize: bool = False) -> Result:
    """The fewest evaluation steps at which a trial read has the metric beyond ``target`` (ties: the
    lower trial id), over the irregular evaluation steps as recorded."""
    best: tuple[int, int, Trial] | None = None
    for trial in study.trials:
        first = next((s for s, v in zip(trial.eval_steps, trial.values, strict=True)
                      if reached(v, target, maximize)), None)
        if first is not None and (best is None or (first, trial.trial_id) < best[:2]):
            best = (first, trial.trial_id, trial)
    if best is None:
        return Result(study.batch_size, None, None, None, len(study.trials))
    rate = best[2].parameters.get("learning_rate")
    return Result(study.batch_size, best[0], best[1], None if rate is None else float(rate),
                  len(study.trials))


def archive_root(data: Path) -> Path:
    """``data`` itself, or ``data/batch_science`` when the archive was unpacked inside ``data``."""
    inner = data / ARCHIVE_FOLDER
    if inner.is_dir() and not any((data / g.folder).is_dir() for g in FIGURE1):
        return inner
    return data


def figure1(data: Path, goals: Sequence[Goal] = FIGURE1) -> list[tuple[Goal, tuple[Study, ...],
                                                                        tuple[Result, ...]]]:
    """Figure 1 from the archive under ``data``: per goal whose workload folder exists, its studies and
    the steps to the goal per batch size. No such folder is an :class:`InputError`."""
    if not data.is_dir():
        raise InputError(f"--data {data}: no such folder")
    root = archive_root(data)
    present = [g for g in goals if (root / g.folder).is_dir()]
    if not present:
        raise InputError(f"--data {data}: none of Figure 1's workload folders found (expected e.g. "
                         f"{root / goals[0].folder}/<batch_size>/study.json)")
    out = []
    for goal in present:
        studies = load_workload(root / goal.folder, goal.metric, goal.num_trials)
        out.append((goal, studies, tuple(steps_to_result(s, goal.target, goal.maximize) for s in studies)))
    return out
