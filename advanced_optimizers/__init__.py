"""advanced_optimizers: five advanced training algorithms for PyTorch, and a harness to compare them."""

__version__ = "0.1.0"
