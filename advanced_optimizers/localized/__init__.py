"""LoCal+SGD: Hebbian early layers before a moving transition layer, a base optimizer after it.

:class:`LocalizedOptimizer` (``optimizer``) puts together the localized rules (``rule``), the
learning-mode selection policies (``selection``), the weak-supervision gate (``gate``) and the layer
checks (``layers``). :class:`FreezeOutOptimizer` is the progressive-freezing baseline (FreezeOut) on
the same machinery.
"""

from .gate import LossGate
from .layers import find_localizable_layers
from .optimizer import (
    RULE_NAMES,
    SELECTION_MODES,
    FreezeOutOptimizer,
    LocalizedOptimizer,
    create_freezeout_optimizer,
    create_localized_optimizer,
)
from .rule import (
    RULES,
    apply_direction_step,
    normalized_hebb_terms,
    oja_subspace_direction,
    oja_subspace_terms,
)
from .selection import DynamicSelection, FreezeOutSelection, SelectionPolicy, StaticSelection

__all__ = [
    "RULES",
    "RULE_NAMES",
    "SELECTION_MODES",
    "DynamicSelection",
    "FreezeOutOptimizer",
    "FreezeOutSelection",
    "LocalizedOptimizer",
    "LossGate",
    "SelectionPolicy",
    "StaticSelection",
    "apply_direction_step",
    "create_freezeout_optimizer",
    "create_localized_optimizer",
    "find_localizable_layers",
    "normalized_hebb_terms",
    "oja_subspace_direction",
    "oja_subspace_terms",
]
