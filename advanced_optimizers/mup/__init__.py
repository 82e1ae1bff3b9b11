"""μP (maximal-update parametrization) and μTransfer."""

from ._all import *  # noqa: F403
from ._all import __all__  # noqa: F401
