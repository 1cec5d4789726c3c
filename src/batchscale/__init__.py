"""batchscale: how the minibatch size changes SGD training, in exact theory and real measurement.

Sub-packages:

- :mod:`batchscale.theory` -- sympy derivations and numpy/scipy simulators (never imports torch).
- :mod:`batchscale.empirical` -- PyTorch training and measurement (never imports sympy).
- :mod:`batchscale.report` -- tables and plots shared by the commands.
- :mod:`batchscale.cli` -- the ``batchscale`` command; parses, calls, formats.

Importing this package imports none of the heavy libraries.
"""

__version__ = "0.1.0"
