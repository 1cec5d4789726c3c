"""Tables, plots and Markdown reports shared by ``predict``, ``measure``, ``sweep`` and ``verify``.

Never imports torch or sympy; matplotlib is imported only when a plot is drawn.
"""
