"""``batchscale reproduce``: a paper's central results, rerun (or recomputed from its released data) and
reported paper-style, with a verdict per statement.

The registry (:data:`PAPERS`) is standard library only, so ``batchscale reproduce list`` stays light; a
paper's module is imported only when it runs. Like :mod:`batchscale.verify`, this package may import both
:mod:`batchscale.theory` and :mod:`batchscale.empirical` (the layout test allows exactly these two).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from batchscale.errors import InputError, require


@dataclass(frozen=True)
class Paper:
    """One reproducible paper: its contract ``name``, citation, what we reproduce, and its module (None:
    not built yet)."""

    name: str
    citation: str
    reproduces: str
    module: str | None

    @property
    def built(self) -> bool:
        return self.module is not None


PAPERS: dict[str, Paper] = {
    p.name: p
    for p in (
        Paper("masters2018", "Masters & Luschi 2018, arXiv 1804.07612",
              "test accuracy over base learning rate x batch size; the stable range narrowing with batch",
              "batchscale.reproduce.masters2018"),
        Paper("shallue2018", "Shallue et al. 2018, arXiv 1811.03600",
              "steps to target vs batch size with per-batch tuning: the three regimes, momentum, data size; "
              "--data DIR: Figure 1 from the authors' released archive", "batchscale.reproduce.shallue2018"),
        Paper("mccandlish2018", "McCandlish et al. 2018, arXiv 1812.06162",
              "B_simple and B_noise along training, steps-examples Pareto fronts at several targets, B_crit "
              "vs target and vs B_simple", "batchscale.reproduce.mccandlish2018"),
        Paper("zhang2019", "Zhang et al. 2019, arXiv 1907.04164",
              "noisy quadratic model: steps vs batch for SGD, momentum, preconditioning, EMA, schedules; "
              "SGD vs momentum vs Adam measured", "batchscale.reproduce.zhang2019"),
        Paper("ma2018", "Ma, Bassily & Belkin 2018, arXiv 1712.06559",
              "least squares: optimal and largest stable step vs batch, the critical batch m*, vs training",
              "batchscale.reproduce.ma2018"),
        Paper("zhang2024", "Zhang et al. 2024, arXiv 2410.21676",
              "the authors' released steps-to-goal table: critical batch per model (three definitions) and "
              "its power law in model size", "batchscale.reproduce.zhang2024"),
    )
}


def check_paper(name: str) -> Paper:
    """The registered paper ``name``; an InputError for an unknown or not yet built one."""
    require(name in PAPERS, f"unknown paper {name!r}; expected one of {', '.join(PAPERS)} (or list)")
    paper = PAPERS[name]
    if not paper.built:
        raise InputError(f"reproduce {name}: not built yet (see `batchscale reproduce list`)")
    return paper


def run(name: str, options):
    """Run paper ``name`` with :class:`batchscale.reproduce.report.Options`; returns its
    :class:`batchscale.reproduce.report.Reproduction` (no report is written; its trials go to the store
    ``options.store``, checked here before anything trains: see :mod:`batchscale.reproduce.trials`)."""
    from batchscale.empirical.store import check_store_file

    paper = check_paper(name)
    check_store_file(options.store)
    return importlib.import_module(paper.module).reproduce(options)
