"""Signal Propagation (SigProp): every layer learns in the forward pass from a label signal.

``networks`` holds the models (:class:`SigPropNet`, :class:`SigPropCNN`), ``losses`` the official
layer-local losses, ``local_grads`` the layer-wise backward, ``optimizer`` the optimizer.
"""

from .losses import LOCAL_LOSSES, column_log_counts, local_loss, signal_similarity
from .networks import ACTIVATIONS, NORMS, SigPropBase, SigPropCNN, SigPropNet
from .optimizer import SigPropAdam, create_sigprop_optimizer

__all__ = [
    "ACTIVATIONS",
    "LOCAL_LOSSES",
    "NORMS",
    "SigPropAdam",
    "SigPropBase",
    "SigPropCNN",
    "SigPropNet",
    "column_log_counts",
    "create_sigprop_optimizer",
    "local_loss",
    "signal_similarity",
]
