"""The claims: name -> one-line description, sources, tolerances, and the module that runs it.

Standard library only: the claim modules (which import torch, numpy, sympy) are imported when a claim runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchscale.errors import InputError, require
from batchscale.verify.rows import Row
from batchscale.verify.tolerances import TOLERANCES, Tolerance

ML = "Masters & Luschi 2018, arXiv 1804.07612"
SHALLUE = "Shallue et al. 2018, arXiv 1811.03600"
MCCANDLISH = "McCandlish et al. 2018, arXiv 1812.06162"
ZHANG_NQM = "Zhang et al. 2019, arXiv 1907.04164"
MBB = "Ma, Bassily & Belkin 2018, arXiv 1712.06559"
GE = "Ge et al. 2015, arXiv 1503.02101"
KESKAR = "Keskar et al. 2017, arXiv 1609.04836"
ZHANG_CBS = "Zhang et al. 2024, arXiv 2410.21676"


@dataclass(frozen=True)
class Claim:
    """A registered claim; ``target`` is ``module:function`` taking an :class:`Options`.

    A claim with ``needs`` is registered but not built yet: it returns one ``inconclusive`` row saying
    what it needs (:func:`batchscale.verify.rows.not_built`), never a pass.
    """

    name: str
    description: str
    sources: tuple[str, ...]
    target: str
    needs: str = ""

    @property
    def real(self) -> bool:
        return not self.needs

    @property
    def tolerances(self) -> dict[str, Tolerance]:
        return {q: t for (c, q), t in TOLERANCES.items() if c == self.name}

    def function(self) -> Callable[[Options], list[Row]]:
        if self.needs:
            return self.not_built
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)

    def not_built(self, opts: Options) -> list[Row]:
        from batchscale.verify.rows import not_built

        workload = opts.workload or "-"
        quantity = next(iter(self.tolerances))
        return [not_built(self.name, quantity, workload, self.needs, opts.config(self.name, workload))]


def _claim(name: str, description: str, sources: tuple[str, ...], module: str, needs: str = "") -> Claim:
    return Claim(name, description, sources, f"batchscale.verify.{module}:run", needs)


CLAIMS: dict[str, Claim] = {
    c.name: c
    for c in (
        _claim(
            "accounting",
            "Steps per epoch and the last partial batch vs a real loader; the last batch's update variance.",
            (ML,),
            "accounting",
        ),
        _claim(
            "moments",
            "Mean and covariance of the update, both loss forms and sampling schemes, "
            "measured on a network vs the exact formulas.",
            (ML,),
            "moments",
        ),
        _claim(
            "accumulation",
            "k micro-batches of m/k give the update of one batch of m; activation "
            "memory grows with the micro-batch.",
            (ML,),
            "accumulation",
        ),
        _claim(
            "staleness",
            "One step on n*m vs n steps of m: the gap is the predicted second-order "
            "term (slope 2 in the learning rate).",
            (ML,),
            "staleness",
        ),
        _claim(
            "stability",
            "Largest stable learning rate vs batch size: exact mean-square theory vs "
            "the divergence boundary of training.",
            (MBB, ML),
            "stability",
        ),
        _claim(
            "regimes",
            "Steps to target vs batch size with tuned learning rates: perfect scaling, "
            "diminishing returns, no benefit.",
            (SHALLUE, ZHANG_NQM),
            "regimes",
        ),
        _claim(
            "noise-scale",
            "B_simple measured along training predicts the critical batch of a measured sweep.",
            (MCCANDLISH, ZHANG_CBS),
            "noise_scale",
        ),
        _claim(
            "nqm-transfer",
            "The noisy quadratic model built from the network's own spectra predicts its steps curve.",
            (ZHANG_NQM,),
            "nqm_transfer",
        ),
        _claim(
            "cosine",
            "Mean cosine between minibatch and full gradient vs batch size, from B_simple.",
            (MCCANDLISH,),
            "cosine",
        ),
        _claim(
            "saddle",
            "Gradient noise escapes a strict saddle, the full batch never does; escape steps vs batch size.",
            (GE,),
            "saddle",
        ),
        _claim(
            "sharpness",
            "Large-batch solutions are sharper (top Hessian eigenvalue at one training loss); the best "
            "test accuracy over base learning rates comes at m = 2..32.",
            (KESKAR, ML),
            "sharpness",
        ),
    )
}


def check_claim(name: str) -> Claim:
    if name not in CLAIMS:
        raise InputError(f"unknown claim {name!r}; expected one of {', '.join(CLAIMS)} (or all)")
    return CLAIMS[name]


def package_versions() -> dict[str, str]:
    """Versions of the packages behind every number (read from metadata: nothing heavy is imported)."""
    versions = {"python": platform.python_version()}
    for name in ("batchscale", "torch", "numpy", "scipy", "sympy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class Options:
    """Resolved options of one run; ``seeds`` None lets each claim use its default (>= 3 where noisy)."""

    workload: str | None = None
    workload_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    seeds: int | None = None
    quick: bool = False
    db: str | None = None
    device: str = "cpu"
    progress: Callable[[str], None] | None = field(default=None, compare=False)

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def seed_list(self, default: int) -> list[int]:
        """``seeds`` (or ``default``) consecutive seeds from ``seed``."""
        return [self.seed + k for k in range(self.seeds if self.seeds is not None else default)]

    def config(self, claim: str, workload: str, **extra: Any) -> dict[str, Any]:
        """The resolved configuration stored with every row of ``claim``."""
        return {
            "claim": claim,
            "workload": workload,
            "workload_options": dict(self.workload_options),
            "seed": self.seed,
            "quick": self.quick,
            "device": self.device,
            "db": self.db,
            **extra,
            "versions": package_versions(),
        }


OPTION_NAMES = ("workload", "workload_options", "seed", "seeds", "quick", "db", "device", "progress")


def resolve(**options: Any) -> Options:
    """Check ``options`` (an InputError on an unknown name or a bad value) and freeze them."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    require(not unknown, f"unknown option(s) {', '.join(unknown)}; expected {', '.join(OPTION_NAMES)}")
    opts = Options(**{k: v for k, v in options.items() if v is not None or k == "workload"})
    require(isinstance(opts.seed, int), f"seed must be an integer, got {opts.seed!r}")
    require(
        opts.seeds is None or (isinstance(opts.seeds, int) and opts.seeds >= 1),
        f"seeds must be a positive integer, got {opts.seeds!r}",
    )
    require(
        opts.device in ("auto", "cpu", "cuda") or opts.device.startswith("cuda:"),
        f"unknown device {opts.device!r}",
    )
    return opts


def run(claim: str, **options: Any) -> list[Row]:
    """Run one claim (theory and measurement on the same workload) and return its rows."""
    entry = check_claim(claim)
    opts = resolve(**options)
    return entry.function()(opts)


def run_all(**options: Any) -> list[Row]:
    """Every registered claim in order; the rows of all of them."""
    opts = resolve(**options)
    rows: list[Row] = []
    for name, entry in CLAIMS.items():
        opts.say(f"== {name}")
        rows += entry.function()(opts)
    return rows
