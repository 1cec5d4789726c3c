"""Real PyTorch training and measurement on real data.

Never imports sympy. Modules are imported on demand, so importing this package does not import torch.
"""
