"""LoCal+SGD: Hebbian early layers before a moving transition layer, SGD after it."""

from .optimizer import *  # noqa: F403
from .optimizer import __all__  # noqa: F401
