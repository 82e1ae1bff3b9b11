"""The model's shapes: wrappers, parameter layouts and owners, and which dims grow with width."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .._validation import check_int

__all__ = ["config_depth_ratio", "unwrap_model"]

_WRAPPER_NAMES = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel")
EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
Owners = list[tuple[str, nn.Module, str]]
Shapes = nn.Module | Mapping[str, Iterable[int]]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / DataParallel / FSDP (``.module``) and ``torch.compile`` wrappers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and type(model).__name__ in _WRAPPER_NAMES:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def strip_prefix(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def param_layout(module: nn.Module, local: str, param: torch.Tensor) -> tuple[int, int] | None:
    """``(fan_out_dim, fan_in_dim)`` of a ≥2-D parameter of a known module, else ``None``.

    The fan-in is the dim the forward sums over: ``Linear``/``Conv`` weights are ``(out, in, k...)``;
    a transposed convolution's are ``(in, out/groups, k...)``; an embedding's ``(vocab, dim)``.
    """
    if isinstance(module, (nn.Linear, nn.Bilinear)) and local == "weight" and param.ndim == 2:
        return (0, 1)
    if isinstance(module, nn.modules.conv._ConvTransposeNd) and local == "weight":
        return (1, 0)
    if isinstance(module, nn.modules.conv._ConvNd) and local == "weight":
        return (0, 1)
    if isinstance(module, EMBEDDINGS) and local == "weight":
        return (1, 0)
    if isinstance(module, nn.MultiheadAttention) and local.endswith("proj_weight"):
        return (0, 1)
    return None


def owners_of(model: nn.Module) -> dict[int, Owners]:
    """For each parameter id, every ``(module name, module, local name)`` that holds it."""
    owners: dict[int, Owners] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for local, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((mod_name, module, local))
    return owners


# ----------------------------------------------------------------------------------------------
# Width multipliers per parameter and dim (None: the dim does not grow)
# ----------------------------------------------------------------------------------------------
def shapes_of(what: str, x: Shapes) -> dict[str, tuple[int, ...]]:
    if isinstance(x, nn.Module):
        return {strip_prefix(n): tuple(p.shape) for n, p in unwrap_model(x).named_parameters()}
    if isinstance(x, Mapping):
        return {strip_prefix(n): tuple(s) for n, s in x.items()}
    raise TypeError(f"{what} must be an nn.Module or a dict of shapes, got {type(x).__name__}")


def mults_from_base(
    model: nn.Module, base: Shapes, delta: Shapes | None
) -> dict[str, list[float | None]]:
    base_shapes = shapes_of("base_model", base)
    delta_shapes = base_shapes if delta is None else shapes_of("delta_model", delta)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for label, other in (("base_model", base_shapes), ("delta_model", delta_shapes)):
        if set(other) != set(shapes):
            raise ValueError(
                f"{label} must have the same parameter names as the model; only in {label}: "
                f"{sorted(set(other) - set(shapes))[:5]}, only in model: "
                f"{sorted(set(shapes) - set(other))[:5]}"
            )
    mults: dict[str, list[float | None]] = {}
    for name, shape in shapes.items():
        base_shape, delta_shape = base_shapes[name], delta_shapes[name]
        if not len(base_shape) == len(delta_shape) == len(shape):
            raise ValueError(
                f"base_model parameter {name} has shape {base_shape}, model has {shape}"
            )
        reference = shape if delta is None else delta_shape
        mults[name] = [
            None if b == r else d / b for b, r, d in zip(base_shape, reference, shape, strict=True)
        ]
    return mults


def _wide_sizes(model: nn.Module, owners: dict[int, Owners], width: int) -> set[int]:
    """The dimension sizes that grow with width, under the configs rule of :func:`classify_parameters`."""
    edges = []  # (fan-in size, fan-out size, is an embedding) of every weight with a known layout
    for param in model.parameters():
        for _, module, local in owners[id(param)]:
            lay = param_layout(module, local, param)
            if lay is not None:
                edges.append(
                    (
                        param.shape[lay[1]],
                        param.shape[lay[0]],
                        isinstance(module, EMBEDDINGS),
                    )
                )
    vocab = {s_in for s_in, _, embedding in edges if embedding}
    produced = {s_out for _, s_out, _ in edges}

    def multiple(size: int) -> bool:
        return size % width == 0 and size not in vocab

    wide, grown = {width}, True
    while grown:  # expansions computed from a wide input: MLP 4w, fused QKV 3w, ...
        grown = False
        for s_in, s_out, _ in edges:
            if s_in in wide and s_out not in wide and multiple(s_out):
                wide.add(s_out)
                grown = True
    for s_in, s_out, embedding in edges:  # wide channels flattened into a readout
        if not embedding and s_out % width and s_in not in produced and multiple(s_in):
            wide.add(s_in)
    return wide


def mults_from_config(
    model: nn.Module, owners: dict[int, Owners], base_width: int, width: int
) -> dict[str, list[float | None]]:
    if not any(width in p.shape for p in model.parameters()):
        raise ValueError(
            f"target_model_config width={width} matches no dimension of the model's parameters; "
            "pass the model's real width (or a base_model)"
        )
    wide, mult = _wide_sizes(model, owners, width), width / base_width
    mults: dict[str, list[float | None]] = {}
    for name, param in model.named_parameters():
        layouts = [param_layout(m, local, param) for _, m, local in owners[id(param)]]
        dims = next((lay for lay in layouts if lay is not None), range(param.ndim))
        mults[name] = [mult if i in dims and s in wide else None for i, s in enumerate(param.shape)]
    return mults


def config_widths(base: Mapping[str, int], target: Mapping[str, int]) -> tuple[int, int]:
    for label, cfg in (("base_model_config", base), ("target_model_config", target)):
        if not isinstance(cfg, Mapping) or "width" not in cfg:
            raise ValueError(f"{label} must be a dict with a 'width' key, got {cfg!r}")
        check_int(f"{label}['width']", cfg["width"], 1)
    return int(base["width"]), int(target["width"])


def config_depth_ratio(base: Mapping[str, int] | None, target: Mapping[str, int] | None) -> float:
    """``target['depth'] / base['depth']``, or 1 when either config has no depth."""
    if not base or not target or "depth" not in base or "depth" not in target:
        return 1.0
    base_depth = check_int("base_model_config['depth']", base["depth"], 1)
    target_depth = check_int("target_model_config['depth']", target["depth"], 1)
    return target_depth / base_depth
