"""The one exception type for bad input, shared by theory, empirical and the CLI.

Library functions raise :class:`InputError` (a ``ValueError``) with a one-line message that names the
offending value; the CLI turns it into ``Error: <message>`` and exit code 2, never a traceback.
"""


class InputError(ValueError):
    """Bad user input: a value out of range, an unknown name, a missing or foreign file."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)
