"""The ``batchscale`` command line: parses options, calls theory or empirical code, formats results.

Subcommands live one module per group and are imported only when invoked, so ``batchscale --help``
and commands that need neither torch nor sympy never import them.
"""
