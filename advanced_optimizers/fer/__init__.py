"""FER — reducing flipping errors: :class:`FERLoss` (``loss``), the algorithm, with any optimizer;
:class:`FEROptimizer` (``optimizer``), the seed API's façade: a base optimizer plus a ``FERLoss``."""

from .loss import FERLoss, fer_lambda
from .optimizer import FEROptimizer, create_fer_optimizer

__all__ = ["FERLoss", "FEROptimizer", "create_fer_optimizer", "fer_lambda"]
