"""The exception types for bad input and for errors in the user's own code, shared by every layer.

Library functions raise :class:`InputError` (a ``ValueError``) with a one-line message that names the
offending value; the CLI turns it into ``Error: <message>`` and exit code 2, never a traceback.
An exception raised inside code the user wrote (a ``module:function`` workload) becomes a
:class:`UserCodeError`: ``Error: <message>`` and exit code 1 (``batchscale --debug``: the traceback).
"""

EXIT_INPUT = 2  # malformed input: the command line, an option's value, a file
EXIT_USER_CODE = 1  # the user's own code raised (and any other failure)


class InputError(ValueError):
    """Bad user input: a value out of range, an unknown name, a missing or foreign file."""


class UserCodeError(Exception):
    """The user's code raised: the message names the function and the frame that raised; the original
    exception is the ``__cause__``."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)
