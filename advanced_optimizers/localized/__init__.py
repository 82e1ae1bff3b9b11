"""LoCal+SGD: Hebbian early layers before a moving transition layer, a base optimizer after it.

:class:`LocalizedOptimizer` (``optimizer``) puts together the localized rule (``rule``), the
learning-mode selection policies (``selection``), the weak-supervision gate (``gate``) and the layer
checks (``layers``).
"""

from .gate import LossGate
from .layers import find_localizable_layers
from .optimizer import SELECTION_MODES, LocalizedOptimizer, create_localized_optimizer
from .rule import apply_direction_step, oja_subspace_direction, oja_subspace_terms
from .selection import DynamicSelection, SelectionPolicy, StaticSelection

__all__ = [
    "SELECTION_MODES",
    "DynamicSelection",
    "LocalizedOptimizer",
    "LossGate",
    "SelectionPolicy",
    "StaticSelection",
    "apply_direction_step",
    "create_localized_optimizer",
    "find_localizable_layers",
    "oja_subspace_direction",
    "oja_subspace_terms",
]
