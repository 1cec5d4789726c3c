"""Progress on stderr: message lines and counters with an ETA, for every long command (built on tqdm).

The library reports through a ``progress`` callable (``Callable[[str], None]``): called with a message
it says one line. The CLI passes :data:`REPORTER`, a :class:`Reporter`; library code that knows how many
units of work lie ahead opens a counter on whatever it was given::

    with counter(progress, total=len(trials), unit="trial", desc="sweep") as bar:
        for trial in trials:
            ...
            bar.update()

:func:`counter` gives a tqdm bar (rate and ETA) when ``progress`` is a :class:`Reporter`, else a silent
counter, so plain callbacks (a list's ``append`` in tests, the Python API's default) keep working and see
the message lines only. Everything goes to stderr, never stdout (tables and JSON stay parseable).

On a terminal the bar redraws in place (at most 10 times a second) and message lines print above it. When
stderr is not a terminal (a log file, a pipe, CI), the bar is written as plain lines, one when it starts,
then at most one every :data:`LINE_SECONDS` seconds and one when it ends: no carriage returns.
``TQDM_DISABLE=1`` in the environment silences the counters (tqdm's own switch); message lines stay.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

LINE_SECONDS = 10.0  # non-terminal stderr: at most one progress line this often


class _Lines:
    """A text stream for tqdm that turns its redraws into whole lines (stderr not a terminal): each write
    keeps the text after its last carriage return, without cursor moves; blank writes (clears, the
    closing newline) and a line with the same counts as the last one (the bar's close) write nothing."""

    def __init__(self, out: TextIO):
        self.out = out
        self.last = ""  # the counts of the last line written (a bar closing where it stood adds none)

    def write(self, text: str) -> None:
        meter = text.replace("\x1b[A", "").split("\r")[-1].strip()
        counts = meter.split(" [")[0]
        if meter and counts != self.last:
            self.out.write(meter + "\n")
            self.last = counts

    def flush(self) -> None:
        self.out.flush()


class _Silent:
    """The counter of a plain callback: counts nothing, says nothing."""

    total: float | None = None
    n = 0

    def update(self, n: float = 1) -> None:
        """Do nothing."""

    def set_total(self, total: float) -> None:
        """Do nothing."""

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        """Do nothing."""


class Reporter:
    """Message lines and tqdm counters on the current ``sys.stderr`` (looked up at each call, so a test
    runner's captured stream is honoured)."""

    def __call__(self, message: str) -> None:
        err = sys.stderr
        if _is_terminal(err):
            from tqdm import tqdm

            tqdm.write(message, file=err)  # above the open bars, which are redrawn below it
        else:
            err.write(message + "\n")
            err.flush()

    def bar(self, total: float | None, unit: str, desc: str) -> Any:
        """A tqdm bar on stderr (line mode when stderr is not a terminal)."""
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread (it outlives the command in tests and workers)
        err = sys.stderr
        terminal = _is_terminal(err)
        known = terminal and _has_size(err)
        bar = tqdm(
            total=total,
            unit=unit,
            desc=desc,
            file=err if terminal else _Lines(err),
            mininterval=0.1 if terminal else LINE_SECONDS,
            maxinterval=LINE_SECONDS,
            dynamic_ncols=terminal and known,
            **({} if known or not terminal else {"ncols": 100, "nrows": 20}),  # tqdm hides in a 0 x 0 pty
            ascii=not terminal,
            position=None if terminal else 0,  # lines need no stacking of nested bars
            leave=None if terminal else True,  # a terminal keeps the outermost bar only
            disable=silenced(),
        )
        bar.lines = not terminal  # tqdm wraps ``file``: remember the mode here
        return bar


def silenced() -> bool:
    """``TQDM_DISABLE`` is set to a true value (1, true, yes) now (tqdm itself reads it only once)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def _has_size(stream: Any) -> bool:
    """Whether the terminal of ``stream`` reports a size (a pseudo-terminal may say 0 x 0)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return size.columns > 0 and size.lines > 0


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


REPORTER = Reporter()


@contextmanager
def counter(
    progress: Callable[[str], None] | None, total: float | None, *, unit: str = "it", desc: str = ""
) -> Iterator[Any]:
    """A counter of ``total`` units with rate and ETA on ``progress`` if it is a :class:`Reporter`, else a
    silent one. Use ``update(n)``, ``set_total(n)`` (work found on the way) and ``set_postfix_str``."""
    if not isinstance(progress, Reporter):
        yield _Silent()
        return
    bar = progress.bar(total, unit, desc)
    bar.set_total = lambda n: _set_total(bar, n)
    try:
        yield bar
    finally:
        bar.close()


def _set_total(bar: Any, total: float) -> None:
    first = bar.total is None
    bar.total = total
    if not bar.disable and (first or not bar.lines):
        bar.refresh()  # a terminal shows a new total at once, a log file the first one only


__all__ = ["LINE_SECONDS", "REPORTER", "Reporter", "counter"]
