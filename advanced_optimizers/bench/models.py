"""Models of the harness: a width/depth-configurable MLP and a small VGG-style CNN.

Both are plain ``nn.Sequential`` stacks of ``Linear``/``Conv2d`` and parameter-free layers, so every
algorithm (including the layer-local ones) can walk them layer by layer.

* ``mlp``: ``Flatten → [Linear(width) → ReLU] × depth → Linear(classes)``. ``width=512, depth=1`` is the
  784-512-10 MLP of the original project description.
* ``cnn``: ``depth`` VGG blocks ``[Conv3x3 → ReLU → Conv3x3 → ReLU → MaxPool2]`` with ``width·2^b``
  channels in block ``b``, then ``Flatten → Linear(128) → ReLU → Linear(classes)``. Works on 1x28x28
  and 3x32x32 inputs (any size divisible by ``2^depth``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from .._validation import check_choice, check_int

__all__ = ["ARCHITECTURES", "ModelSpec", "build_cnn", "build_mlp"]

ARCHITECTURES = ("mlp", "cnn")
_DEFAULTS = {"mlp": {"width": 512, "depth": 1}, "cnn": {"width": 16, "depth": 2}}


@dataclass(frozen=True)
class ModelSpec:
    """What to build: architecture, data shape and size. ``width``/``depth`` of ``None`` use defaults."""

    arch: str = "mlp"
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    width: int | None = None
    depth: int | None = None

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ARCHITECTURES)
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if len(self.input_shape) != 3:
            raise ValueError(
                f"input_shape must be (channels, height, width), got {self.input_shape}"
            )
        check_int("num_classes", self.num_classes, 2)
        for field, value in _DEFAULTS[self.arch].items():
            if getattr(self, field) is None:
                object.__setattr__(self, field, value)
        check_int("width", self.width, 1)
        check_int("depth", self.depth, 0 if self.arch == "mlp" else 1)

    @property
    def input_dim(self) -> int:
        """Number of input features once flattened."""
        return math.prod(self.input_shape)

    def build(self) -> nn.Sequential:
        """A freshly initialised model (PyTorch's default init, from the global RNG)."""
        builder = build_mlp if self.arch == "mlp" else build_cnn
        return builder(self)

    def to_dict(self) -> dict:
        return asdict(self)


def build_mlp(spec: ModelSpec) -> nn.Sequential:
    """``Flatten → [Linear → ReLU] × depth → Linear``."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = spec.input_dim
    for _ in range(spec.depth):
        layers += [nn.Linear(fan_in, spec.width), nn.ReLU()]
        fan_in = spec.width
    layers.append(nn.Linear(fan_in, spec.num_classes))
    return nn.Sequential(*layers)


def build_cnn(spec: ModelSpec) -> nn.Sequential:
    """VGG-style: ``depth`` blocks of two 3x3 convs and a 2x2 max-pool, then a 2-layer classifier."""
    channels, height, width = spec.input_shape
    if height % 2**spec.depth or width % 2**spec.depth:
        raise ValueError(
            f"cnn with depth={spec.depth} needs input height and width divisible by "
            f"{2**spec.depth}, got {height}x{width}"
        )
    layers: list[nn.Module] = []
    for block in range(spec.depth):
        out = spec.width * 2**block
        layers += [
            nn.Conv2d(channels, out, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(out, out, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = out
    spatial = (height // 2**spec.depth) * (width // 2**spec.depth)
    layers += [
        nn.Flatten(),
        nn.Linear(channels * spatial, 128),
        nn.ReLU(),
        nn.Linear(128, spec.num_classes),
    ]
    return nn.Sequential(*layers)
