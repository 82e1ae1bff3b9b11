"""advanced_optimizers: five advanced training algorithms for PyTorch, and a harness to compare them.

The algorithms need torch only; the experiment harness (``advanced_optimizers.bench``, the ``advopt``
command) needs the ``bench`` extra.
"""

from . import integrations as integrations
from ._version import __version__ as __version__
from .data import IndexedDataset, collate_with_index
from .fer import FERLoss, FEROptimizer, create_fer_optimizer, fer_lambda
from .gradient_correction import GradientCorrectionOptimizer, create_gradient_correction_optimizer
from .localized import LocalizedOptimizer, create_localized_optimizer
from .mup import (
    MuPAdam,
    MuPAdamW,
    MuPSGD,
    apply_mup_init,
    classify_parameters,
    create_mu_transfer_optimizer,
    mup_param_groups,
)
from .registry import create_optimizer, list_optimizers
from .sigprop import (
    LOCAL_LOSSES,
    SigPropAdam,
    SigPropCNN,
    SigPropNet,
    create_sigprop_optimizer,
)

__all__ = [
    "LOCAL_LOSSES",
    "FERLoss",
    "FEROptimizer",
    "GradientCorrectionOptimizer",
    "IndexedDataset",
    "LocalizedOptimizer",
    "MuPAdam",
    "MuPAdamW",
    "MuPSGD",
    "SigPropAdam",
    "SigPropCNN",
    "SigPropNet",
    "apply_mup_init",
    "classify_parameters",
    "collate_with_index",
    "create_fer_optimizer",
    "create_gradient_correction_optimizer",
    "create_localized_optimizer",
    "create_mu_transfer_optimizer",
    "create_optimizer",
    "create_sigprop_optimizer",
    "fer_lambda",
    "list_optimizers",
    "mup_param_groups",
]
