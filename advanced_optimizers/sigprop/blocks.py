"""The local blocks of the SigProp networks: per-sample norms, activations and the block lists.

:func:`mlp_blocks` builds :class:`~.networks.SigPropNet`'s ``[Linear → norm → act]`` blocks,
:func:`vgg_blocks` :class:`~.networks.SigPropCNN`'s conv and fully connected blocks (with the
max-pools as fixed stages when the loss is taken before pooling); :func:`_signal_projection` is the
label → signal projection of every network. BatchNorm is refused (:func:`_check_norm`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from .._validation import check_choice, check_int

__all__ = ["ACTIVATIONS", "NORMS", "mlp_blocks", "vgg_blocks"]

ACTIVATIONS = ("relu", "leaky_relu")
NORMS = ("none", "layer", "instance")


def _check_norm(norm: str) -> str:
    if norm in ("batch", "batch_norm", "batchnorm"):
        raise ValueError(
            f"norm={norm!r} is not supported: BatchNorm normalises with statistics of the batch, "
            "and SigProp sends the inputs and the class signals through each block together "
            "(one signal per class, not per sample), so the batch statistics would mix the class "
            "signals with the inputs and a class's signal would depend on the batch it is in; "
            "use a per-sample normalisation: 'layer' or 'instance'"
        )
    return check_choice("norm", norm, NORMS)


def _norm(norm: str, features: int, conv: bool) -> list[nn.Module]:
    """Per-sample normalisation after the Linear/Conv (official post-activation ``norm_1d/2d``).

    ``"layer"``: LayerNorm over the features (a conv map: ``GroupNorm(1, C)``, i.e. over
    (C, H, W) with a per-channel affine); ``"instance"``: ``InstanceNorm2d(affine=True)`` for a
    conv map; a vector has no spatial positions, so there it is LayerNorm (as the official
    ``norm_1d`` maps ``instance_norm``).
    """
    if norm == "none":
        return []
    if not conv:
        return [nn.LayerNorm(features)]
    if norm == "layer":
        return [nn.GroupNorm(1, features)]
    return [nn.InstanceNorm2d(features, affine=True)]


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(0.01)


def _signal_projection(num_classes: int, numel: int) -> nn.Sequential:
    """Official ``signal_modules_lp``: bias-free Linear → LayerNorm → ReLU."""
    return nn.Sequential(nn.Linear(num_classes, numel, bias=False), nn.LayerNorm(numel), nn.ReLU())


def mlp_blocks(
    input_dim: int, hidden_dims: Sequence[int], norm: str, activation: str, bias: bool
) -> tuple[list[nn.Module], int]:
    """The MLP's local blocks ``[Linear → norm → act]`` and the width of the last one."""
    blocks: list[nn.Module] = []
    fan_in = input_dim
    for width in hidden_dims:
        blocks.append(
            nn.Sequential(
                nn.Linear(fan_in, width, bias=bias),
                *_norm(norm, width, conv=False),
                _activation(activation),
            )
        )
        fan_in = width
    return blocks, fan_in


def vgg_blocks(
    input_shape: tuple[int, ...],
    channels: Sequence[int],
    convs_per_stage: int,
    fc_dims: Sequence[int],
    norm: str,
    activation: str,
    loss_before_pool: bool,
) -> tuple[list[nn.Module], list[nn.Module | None], int]:
    """The VGG-style CNN's local blocks, their fixed stages and the output layer's fan-in.

    For each entry ``c`` of ``channels``, ``convs_per_stage`` x [Conv3x3(c) → norm → act], the last
    one followed by MaxPool2 (a fixed stage after the block with ``loss_before_pool``, else the
    block's end); then one block per ``fc_dims`` entry (Flatten → Linear → norm → act).
    """
    c_in, height, width = input_shape
    scale = 2 ** len(channels)
    blocks: list[nn.Module] = []
    fixed: list[nn.Module | None] = []
    for c_out in channels:
        for conv in range(convs_per_stage):
            layers = [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                *_norm(norm, c_out, conv=True),
                _activation(activation),
            ]
            pool = nn.MaxPool2d(2) if conv == convs_per_stage - 1 else None
            if pool is not None and not loss_before_pool:
                layers.append(pool)
            blocks.append(nn.Sequential(*layers))
            fixed.append(pool if loss_before_pool else None)
            c_in = c_out
    fan_in = c_in * (height // scale) * (width // scale)
    for dim in fc_dims:
        blocks.append(
            nn.Sequential(
                nn.Flatten(),
                nn.Linear(fan_in, dim),
                *_norm(norm, dim, conv=False),
                _activation(activation),
            )
        )
        fixed.append(None)
        fan_in = dim
    return blocks, fixed, fan_in


def _check_dims(name: str, dims: Iterable[int], allow_empty: bool = False) -> list[int]:
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(dims).__name__}")
    dims = list(dims)
    if not dims and not allow_empty:
        raise ValueError(f"{name} must contain at least one positive int, got []")
    for d in dims:
        check_int(f"{name} entries", d, 1)
    return dims
