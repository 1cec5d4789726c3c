"""Exact theory (sympy) and fast analytical simulators (numpy/scipy).

Never imports torch. Modules are imported on demand (``from batchscale.theory import moments``), so
importing this package costs nothing.
"""
