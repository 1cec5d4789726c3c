"""``batchscale workloads``: list the built-in workloads with their sizes and parameter counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from batchscale.cli.common import (
    FolderPath,
    emit,
    format_option,
    progress,
    seed_option,
    workload_options,
)

SHORT_COLUMNS = ("name", "loss", "n_train", "n_test", "input_shape", "outputs", "n_params", "status")
LONG_COLUMNS = (*SHORT_COLUMNS, "description", "options")


def options_text(options: dict[str, Any]) -> str:
    """``{'a': 1, 'b': (2, 3)}`` -> ``'a=1 b=2,3'`` (the -W syntax)."""

    def value(v: Any) -> str:
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

    return " ".join(f"{k}={value(v)}" for k, v in options.items())


def workload_row(info: Any, data_dir: Path) -> dict[str, Any]:
    """Summary row of one registered workload built with its default options (files read from
    ``data_dir``); missing or unreadable files give a row whose status says so instead of an error."""
    from batchscale.empirical.data.files import MissingDataError
    from batchscale.empirical.workloads import get_workload, workload_summary
    from batchscale.errors import InputError

    options = {"data_dir": str(data_dir)} if info.needs_files else {}
    base = {"name": info.name, "loss": info.loss, "description": info.description}
    base["options"] = options_text({**info.options, **options})
    try:
        summary = workload_summary(get_workload(info.name, **options))
    except MissingDataError:
        return {**base, "status": f"files missing under {data_dir}"}
    except InputError as exc:  # e.g. a damaged data file: list the others, say what is wrong with this one
        return {**base, "status": f"error: {exc}"}
    return {**base, **summary, "status": "ok"}


def one_workload_row(name: str, options: dict[str, Any], seed: int, data_dir: Path | None) -> dict[str, Any]:
    """Summary row of ``name`` (registered or package.module:function) built with ``options``; any
    problem (unknown name, bad option, missing files, broken contract) propagates as an InputError."""
    from batchscale.empirical.workloads import (
        get_workload,
        list_workloads,
        workload_description,
        workload_summary,
    )

    infos = {info.name: info for info in list_workloads()}
    if data_dir is not None and name in infos and infos[name].needs_files:
        options = {"data_dir": str(data_dir), **options}
    workload = get_workload(name, seed=seed, **options)
    description = workload_description(name)
    row = {"name": name, **workload_summary(workload), "status": "ok", "description": description}
    return {**row, "options": options_text(workload.options)}


@click.command("workloads")
@click.option(
    "--data-dir",
    type=FolderPath(),
    callback=lambda ctx, param, value: None if value is None else Path(value),
    default=None,
    help="Where the file-based workloads (mnist-cnn, fashion-mnist-cnn, cifar10-resnet8) look for their "
    "files [default: $BATCHSCALE_DATA_DIR, else the user data directory].",
)
@click.option(
    "--long", "long_", is_flag=True, help="Also show each workload's description and default options."
)
@workload_options(default=None, data_dir=False)
@seed_option
@format_option()
def workloads(
    data_dir: Path | None,
    long_: bool,
    workload: str | None,
    workload_option: dict[str, Any],
    seed: int,
    fmt: str,
) -> None:
    """List the built-in workloads with their sizes and parameter counts.

    Each workload is built with its default options (MNIST-1D at its default 5000 examples, generated
    once and then read from the cache); file-based workloads whose files are absent are listed with the
    status "files missing under DIR". With --workload NAME (and -W KEY=VALUE, --seed) only that workload
    is built, and any problem is an error: use it to check a package.module:function workload of your own.
    """
    if workload is not None:
        row = one_workload_row(workload, dict(workload_option), seed, data_dir)
        emit([row], fmt, LONG_COLUMNS)
        return
    from batchscale.empirical.workloads import default_data_dir, list_workloads

    root = data_dir if data_dir is not None else default_data_dir()
    rows = []
    for info in list_workloads():
        progress(f"workloads: loading {info.name}")
        rows.append(workload_row(info, root))
    emit(rows, fmt, LONG_COLUMNS if long_ or fmt != "table" else SHORT_COLUMNS)
