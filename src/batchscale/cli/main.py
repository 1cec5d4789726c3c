"""Root ``batchscale`` group: lazily loaded subcommands and one-line errors.

Exit codes: 0 success; 2 malformed input (a bad option, value, name or file: one ``Error:`` line, before
any work); 1 an exception raised inside the user's own code (a ``module:function`` workload: one ``Error:``
line naming it and the frame that raised) or an interrupted run. ``batchscale --debug ...`` lets every
error propagate with its Python traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from batchscale import __version__
from batchscale.cli.common import Interrupted
from batchscale.errors import EXIT_INPUT, EXIT_USER_CODE, InputError, UserCodeError

# name -> ("module:attribute", short help); a module is imported only when its command runs.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "derive": (
        "batchscale.cli.derive:derive",
        "Exact symbolic results: accounting, update moments, accumulation, staleness.",
    ),
    "predict": (
        "batchscale.cli.predict:predict",
        "Analytical predictions: noisy quadratic model, noise scale, stability.",
    ),
    "measure": (
        "batchscale.cli.measure:measure",
        "Measure gradient statistics and update moments on a real network.",
    ),
    "sweep": (
        "batchscale.cli.sweep:sweep",
        "Train many runs: steps-to-target per batch size, LR x batch grids.",
    ),
    "runs": ("batchscale.cli.runs:runs", "Inspect and export a sweep's results database."),
    "advise": (
        "batchscale.cli.advise:advise",
        "Which batch size and learning rate for my model: measured B_crit, S(B), E(B).",
    ),
    "verify": (
        "batchscale.cli.verify:verify",
        "Check each claim: theory's prediction vs a measurement, with a verdict.",
    ),
    "reproduce": (
        "batchscale.cli.reproduce:reproduce",
        "Rerun a paper's central result: a report with a verdict per statement.",
    ),
    "workloads": (
        "batchscale.cli.workloads:workloads",
        "List the built-in workloads with their sizes and parameter counts.",
    ),
}


class CliInputError(click.ClickException):
    """Printed as a single ``Error: ...`` line with exit code 2 (click's usage-error code)."""

    exit_code = EXIT_INPUT


class CliUserCodeError(click.ClickException):
    """The user's code raised: a single ``Error: ...`` line with exit code 1."""

    exit_code = EXIT_USER_CODE


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use.

    ``lazy`` maps a command name to ``("module:attribute", short help)``. Commands whose module is not
    installed are left out of the listing.
    """

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def _available(self) -> list[str]:
        return [n for n, (t, _) in self.lazy.items() if importlib.util.find_spec(t.split(":")[0])]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._available()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name in self._available():
            module_name, attr = self.lazy[name][0].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, self.lazy[name][1] if name in self.lazy else self.commands[name].get_short_help_str())
            for name in self.list_commands(ctx)
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        if ctx.params.get("debug"):
            return super().invoke(ctx)  # every error with its traceback
        try:
            return super().invoke(ctx)
        except InputError as exc:
            raise CliInputError(first_line(exc, "bad input")) from None
        except UserCodeError as exc:
            raise CliUserCodeError(first_line(exc, "your code raised")) from None
        except KeyboardInterrupt:
            raise Interrupted("stopped by Ctrl-C before the command finished") from None
        except click.BadParameter as exc:
            exc.ctx = None  # a malformed value is one `Error:` line, without the usage header
            raise


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchscale")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Predict and measure how the minibatch size changes SGD training."""


def first_line(exc: BaseException, fallback: str) -> str:
    text = str(exc)
    return text.splitlines()[0] if text.strip() else fallback


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="batchscale")


if __name__ == "__main__":
    main()
