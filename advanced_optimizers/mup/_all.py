"""μP (maximal-update parametrization) and zero-shot hyperparameter transfer (μTransfer).

Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen, Gao, "Tensor Programs V: Tuning Large
Neural Networks via Zero-Shot Hyperparameter Transfer" (arXiv 2203.03466); reference library
``microsoft/mup``. Depth: Yang, Yu, Zhu, Hayou, "Tensor Programs VI" (Depth-μP, arXiv 2310.02244),
Bordelon et al. (arXiv 2309.16620), Dey et al. "CompleteP" (arXiv 2505.01618).

What μP fixes
-------------
Every parameter is classified from how its dimensions grow with width. ``m_in`` / ``m_out`` are the
width multipliers (``dim / base_dim``, 1 for a dimension that does not grow) of its fan-in / fan-out:

===========  ==========================  ==================  ==================  ==================
role         which tensors               init std (×SP)      Adam/AdamW LR (×η)  SGD LR (×η)
===========  ==========================  ==================  ==================  ==================
``input``    finite fan-in, wide fan-out  1                   1                   m_out
``hidden``   wide fan-in and fan-out     1 (SP is 1/√fan_in)  1/m_in              m_out/m_in
``output``   wide fan-in, finite fan-out 1/√m_in (or zero)    1/m_in              1/m_in
``vector``   biases, norm gains (wide)   √m_in of its layer*  1                   m
``fixed``    nothing grows               1                   1                   1
===========  ==========================  ==================  ==================  ==================

This is the "no forward multiplier" form of μP (Tensor Programs V, Table 3/8): mup's ``MuReadout``
(readout multiplier 1/m, width-constant init, LR η for Adam) is the same dynamics after moving the
multiplier into the init and the LR. The advantage is that the model stays a plain PyTorch model (no
custom layers; ``torch.compile``/DDP/checkpoints see ordinary modules) and **at multiplier 1 every
factor is exactly 1.0**, so the model and its training are bit-for-bit standard parametrization (SP).
(*) a bias of a layer with a wide fan-in is multiplied by ``√m_in`` at init, because PyTorch's default
bias init ``U(±1/√fan_in)`` shrinks with width while μP wants it width-constant (as mup's
``rescale_linear_bias``).

Weight decay: the per-step decay ``lr·wd`` of every parameter is kept width-independent (mup's default):
``wd`` is divided by the LR factor. For AdamW (decoupled; torch applies ``p -= lr·wd·p``) this is
exact. Adam with *coupled* (L2) weight decay is refused unless ``allow_coupled_weight_decay=True``:
the L2 term goes through Adam's normalisation, so the decay is neither decoupled nor width-invariant —
a classic silent mistake. **[design]** Adam's ``eps``: under μP the gradient entries of every
parameter fed by the wide hidden activations' backward signal (input, hidden, vector) shrink like
``1/m`` while those of the readout stay Θ(1), so with ``scale_eps=True`` (default) their ``eps`` is
divided by ``m`` (and by the depth branch multiplier, below); otherwise a fixed ``eps`` would dominate
the tiny second moments of a very wide model and turn Adam into SGD. mup does not scale eps; at
``m = 1`` both agree exactly.

Depth (residual networks)
-------------------------
Wrap each residual branch in :class:`DepthScaledResidual` (``x + a·branch(x)``). Relative to the base
depth ``L0``, with ``r = L / L0`` and exponent ``α`` (``depth_alpha``): branch multiplier
``a = r^(−α)``; LR of every parameter inside a branch ×``r^(α−1)`` for Adam and ×``r^(2α−1)`` for SGD
(each block then moves the residual stream by Θ(1/L)); Adam ``eps`` ×``r^(−α)`` (the branch's gradients
carry the multiplier). ``α = 1/2`` is Depth-μP, ``α = 1`` is CompleteP. **[design]** the relative form
(``a = 1`` at the base depth rather than ``1/√L``) keeps "identical to SP at the base config".

Where the papers and mup are silent, or trip users (all **[design]**)
----------------------------------------------------------------------
* Classification from a base model (compare shapes, like mup's base shapes) or from the seed's
  ``{'width', 'depth'}`` configs (a dimension is wide iff it is a multiple of the target width; its
  multiplier is ``target_width / base_width``). The layout (which dim is fan-in) comes from the owning
  module: ``Linear``, ``Conv*`` (transposed convs swap), ``Embedding`` (weight is ``(vocab, dim)``: an
  input, not a readout), ``MultiheadAttention``, norms. A wide ≥2-D parameter of an unknown module, a
  tensor shared by modules of different layouts (tied embedding/readout), a tensor with more than two
  wide dims, or a model with wide layers but no readout raise :class:`AmbiguousParameterError` that
  names the parameter and asks for ``roles={'name or glob': 'input'|'hidden'|'output'|'vector'|
  'fixed'}``. :func:`describe_parametrization` prints the table of roles and factors.
* Wrappers: ``DistributedDataParallel``/``DataParallel``/FSDP (``.module``) and ``torch.compile``
  (``._orig_mod``) are unwrapped, so the names (and groups) are those of the plain model; base-model
  names with or without a ``module.`` prefix match either.
* Checkpoints: the optimizer is a subclass of ``torch.optim.Adam``/``AdamW``/``SGD`` whose groups carry
  ``mup_role`` and ``mup_lr_factor``; group order is deterministic, so ``state_dict``/``load_state_dict``
  (and ``torch.load(weights_only=True)``) restore them. Init rescaling is marked on each parameter and
  not repeated by a second call; the usual pattern "build model, create optimizer, load checkpoint"
  restores trained weights over the rescaled init.
* LR schedulers: torch's schedulers multiply each group's own initial LR, so they scale all groups
  relatively and keep μP. Ones that set absolute LRs (``OneCycleLR``/``CyclicLR`` with a scalar
  ``max_lr``, a non-zero ``eta_min`` / ``min_lr``) break the ratios; ``step()`` checks that
  ``lr / mup_lr_factor`` is equal across μP groups and warns (``lr_ratio_check='warn'``) or raises.
  :func:`mup_group_lrs` gives per-group lists for such schedulers.
* Non-finite gradients (``nonfinite='skip'``, default): if any gradient has a NaN/Inf the whole step is
  skipped with a ``RuntimeWarning`` — parameters and Adam moments/step counts stay untouched;
  ``'raise'`` raises ``FloatingPointError``; ``'ignore'`` is plain torch behaviour.
* Attention: use :func:`mup_attention_scale` / :func:`mup_scaled_dot_product_attention` (logits
  ``×√d0/d`` for head size ``d`` and base head size ``d0``: ``1/√d`` at the base, ``∝ 1/d`` beyond).
  ``nn.MultiheadAttention`` hard-codes ``1/√d``; classification warns when its head size is wide.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._finite import all_finite, grads_of
from .._validation import check_choice, check_int, check_nonnegative, check_positive, check_range

__all__ = [
    "ROLES",
    "AmbiguousParameterError",
    "DepthScaledResidual",
    "MuPAdam",
    "MuPAdamW",
    "MuPSGD",
    "ParamInfo",
    "apply_mup_init",
    "check_lr_ratios",
    "classify_parameters",
    "create_mu_transfer_optimizer",
    "describe_parametrization",
    "mup_attention_scale",
    "mup_factors",
    "mup_group_lrs",
    "mup_param_groups",
    "mup_scaled_dot_product_attention",
    "residual_mlp",
    "set_depth_multipliers",
    "unwrap_model",
]

ROLES = ("input", "hidden", "output", "vector", "fixed")
OPTIMIZERS = ("adamw", "adam", "sgd")
_WRAPPER_NAMES = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel")
_NORMS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._NormBase,
    getattr(nn, "RMSNorm", nn.LayerNorm),
)


class AmbiguousParameterError(ValueError):
    """A parameter's μP role cannot be decided from the model; pass ``roles={name: role}``."""


@dataclass(frozen=True)
class ParamInfo:
    """How one parameter scales: its role, width multipliers and residual-depth ratio.

    ``fan_in_mult`` / ``fan_out_mult``: ``dim / base_dim`` of the fan-in / fan-out (1 if not wide; for
    a vector both equal its multiplier). ``bias_fan_in_mult``: for a bias, the fan-in multiplier of its
    layer (its init is scaled by its square root), else 1. ``depth_ratio``: ``L / L0`` if the
    parameter lives in a :class:`DepthScaledResidual` branch, else 1.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    fan_in_mult: float = 1.0
    fan_out_mult: float = 1.0
    bias_fan_in_mult: float = 1.0
    depth_ratio: float = 1.0
    in_branch: bool = False


@dataclass(frozen=True)
class Factors:
    """Multipliers relative to SP: learning rate, init std, weight decay and Adam eps."""

    lr: float
    init: float
    weight_decay: float
    eps: float


# ----------------------------------------------------------------------------------------------
# Depth: residual branches
# ----------------------------------------------------------------------------------------------
class DepthScaledResidual(nn.Module):
    """``x + a · branch(x)`` with the branch multiplier ``a`` kept as a (persistent) buffer.

    ``a = 1`` until :func:`set_depth_multipliers` (called by :func:`create_mu_transfer_optimizer`)
    sets it to ``(L / L0)^(−α)``; it is saved in the model's ``state_dict``.
    """

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.register_buffer("multiplier", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.multiplier * self.branch(x)


def residual_mlp(in_features: int, width: int, depth: int, num_classes: int) -> nn.Sequential:
    """``Flatten → Linear(in, w) → [x + a·Linear(ReLU(x))] × depth → ReLU → Linear(w, classes)``."""
    blocks = [
        DepthScaledResidual(nn.Sequential(nn.ReLU(), nn.Linear(width, width))) for _ in range(depth)
    ]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, width),
        *blocks,
        nn.ReLU(),
        nn.Linear(width, num_classes),
    )


def set_depth_multipliers(model: nn.Module, depth_ratio: float, alpha: float) -> int:
    """Set every :class:`DepthScaledResidual` multiplier to ``depth_ratio^(−alpha)``; return the count."""
    check_positive("depth_ratio", depth_ratio)
    count = 0
    for module in unwrap_model(model).modules():
        if isinstance(module, DepthScaledResidual):
            module.multiplier.fill_(depth_ratio ** (-alpha))
            count += 1
    return count


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------
def mup_attention_scale(d_head: int, base_d_head: int) -> float:
    """Attention-logit scale ``√d0 / d``: ``1/√d`` at the base head size ``d0``, ``∝ 1/d`` beyond."""
    check_int("d_head", d_head, 1)
    check_int("base_d_head", base_d_head, 1)
    return math.sqrt(base_d_head) / d_head


def mup_scaled_dot_product_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, base_d_head: int, **kwargs: Any
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with the μP scale for ``query.shape[-1]`` (see above)."""
    if "scale" in kwargs:
        raise TypeError("mup_scaled_dot_product_attention sets scale itself; do not pass scale")
    scale = mup_attention_scale(query.shape[-1], base_d_head)
    return F.scaled_dot_product_attention(query, key, value, scale=scale, **kwargs)


# ----------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------
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


def _strip_prefix(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _layout(module: nn.Module, local: str, param: torch.Tensor) -> tuple[int, int] | None:
    """``(fan_out_dim, fan_in_dim)`` of a ≥2-D parameter of a known module, else ``None``."""
    if isinstance(module, (nn.Linear, nn.Bilinear)) and local == "weight" and param.ndim == 2:
        return (0, 1)
    if isinstance(module, nn.modules.conv._ConvTransposeNd) and local == "weight":
        return (1, 0)
    if isinstance(module, nn.modules.conv._ConvNd) and local == "weight":
        return (0, 1)
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and local == "weight":
        return (1, 0)
    if isinstance(module, nn.MultiheadAttention) and local.endswith("proj_weight"):
        return (0, 1)
    return None


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """For each parameter id, every ``(module name, module, local name)`` that holds it."""
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for local, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((mod_name, module, local))
    return owners


def _shapes_of(what: str, x: nn.Module | Mapping[str, Iterable[int]]) -> dict[str, tuple[int, ...]]:
    if isinstance(x, nn.Module):
        return {_strip_prefix(n): tuple(p.shape) for n, p in unwrap_model(x).named_parameters()}
    if isinstance(x, Mapping):
        return {_strip_prefix(n): tuple(s) for n, s in x.items()}
    raise TypeError(f"{what} must be an nn.Module or a dict of shapes, got {type(x).__name__}")


def _width_mults_from_base(
    model: nn.Module,
    base: nn.Module | Mapping[str, Iterable[int]],
    delta: nn.Module | Mapping[str, Iterable[int]] | None = None,
) -> dict[str, list[float | None]]:
    """Per parameter and dim: ``dim / base_dim`` if the dim is wide, else ``None``.

    Without ``delta`` a dim is wide iff it differs from the base; with ``delta`` (the same
    architecture at another width, like mup's delta model) iff base and delta differ there, so roles
    are known even when the model has the base width (m = 1)."""
    base_shapes = _shapes_of("base_model", base)
    delta_shapes = base_shapes if delta is None else _shapes_of("delta_model", delta)
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


def _width_mults_from_config(
    model: nn.Module, base_width: int, target_width: int
) -> dict[str, list[float | None]]:
    mult = target_width / base_width
    mults = {
        name: [mult if d % target_width == 0 else None for d in p.shape]
        for name, p in model.named_parameters()
    }
    if not any(m is not None for dims in mults.values() for m in dims):
        raise ValueError(
            f"target_model_config width={target_width} matches no dimension of the model's "
            "parameters; pass the model's real width (or a base_model)"
        )
    return mults


def _role_from_override(name: str, roles: Mapping[str, str]) -> str | None:
    for pattern, role in roles.items():
        if pattern == name or fnmatch.fnmatchcase(name, pattern):
            return check_choice(f"roles[{pattern!r}]", role, ROLES)
    return None


def _classify_matrix(
    name: str, dims: list[float | None], layout: tuple[int, int]
) -> tuple[str, float, float]:
    fan_out_dim, fan_in_dim = layout
    extra = [m for i, m in enumerate(dims) if i not in layout and m is not None]
    if extra:
        raise AmbiguousParameterError(
            f"parameter {name!r} has a wide dimension besides fan-in/fan-out; which role is it? "
            f"pass roles={{{name!r}: one of {ROLES}}}"
        )
    m_out, m_in = dims[fan_out_dim], dims[fan_in_dim]
    role = {
        (False, False): "fixed",
        (True, False): "input",
        (True, True): "hidden",
        (False, True): "output",
    }[(m_out is not None, m_in is not None)]
    return role, m_in or 1.0, m_out or 1.0


def _classify_one(
    name: str,
    param: torch.Tensor,
    dims: list[float | None],
    owners: list[tuple[str, nn.Module, str]],
    roles: Mapping[str, str],
) -> ParamInfo:
    wide = [m for m in dims if m is not None]
    override = _role_from_override(name, roles)
    if override is not None:
        mult = max(wide, default=1.0)
        return ParamInfo(name, tuple(param.shape), override, mult, mult)
    if param.ndim <= 1:
        role = "vector" if wide else "fixed"
        mult = wide[0] if wide else 1.0
        return ParamInfo(name, tuple(param.shape), role, mult, mult)
    layouts = {_layout(module, local, param) for _, module, local in owners}
    if len(layouts) > 1:
        holders = ", ".join(f"{mn or '<root>'}.{local}" for mn, _, local in owners)
        raise AmbiguousParameterError(
            f"parameter {name!r} is shared by modules with different layouts ({holders}), e.g. a "
            f"tied embedding/readout; which role should it have? pass roles={{{name!r}: 'input' or "
            "'output'}}"
        )
    layout = layouts.pop()
    if layout is None:
        if not wide:
            return ParamInfo(name, tuple(param.shape), "fixed")
        raise AmbiguousParameterError(
            f"parameter {name!r} (shape {tuple(param.shape)}) belongs to "
            f"{type(owners[0][1]).__name__}, whose fan-in/fan-out layout is unknown; is it an input, "
            f"hidden or output (readout) weight? pass roles={{{name!r}: one of {ROLES}}}"
        )
    role, m_in, m_out = _classify_matrix(name, dims, layout)
    return ParamInfo(name, tuple(param.shape), role, m_in, m_out)


def _bias_fan_in_mult(
    info: ParamInfo, owners: list[tuple[str, nn.Module, str]], infos_by_id: dict[int, ParamInfo]
) -> float:
    """For the bias of a Linear/Conv, the fan-in multiplier of its weight (else 1)."""
    if info.role not in ("vector", "fixed"):
        return 1.0
    for _, module, local in owners:
        if local == "bias" and isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            weight_info = infos_by_id.get(id(module.weight))
            if weight_info is not None:
                return weight_info.fan_in_mult
    return 1.0


def _branch_prefixes(model: nn.Module) -> list[str]:
    return [f"{n}." for n, m in model.named_modules() if isinstance(m, DepthScaledResidual)]


def classify_parameters(
    model: nn.Module,
    base_model: nn.Module | Mapping[str, Iterable[int]] | None = None,
    *,
    base_model_config: Mapping[str, int] | None = None,
    target_model_config: Mapping[str, int] | None = None,
    roles: Mapping[str, str] | None = None,
    delta_model: nn.Module | Mapping[str, Iterable[int]] | None = None,
) -> list[ParamInfo]:
    """Classify every parameter of ``model`` as input / hidden / output / vector / fixed.

    Give either ``base_model`` (a narrower model of the same architecture, or a dict ``name → base
    shape``; dims that differ are wide — or, with ``delta_model``, dims where base and delta differ)
    or the two configs ``{'width': w, 'depth': L}`` (dims that are multiples of the target width are
    wide). ``roles`` overrides by exact name or glob pattern.
    """
    plain = unwrap_model(model)
    roles = {_strip_prefix(k): v for k, v in (roles or {}).items()}
    if base_model is not None:
        mults = _width_mults_from_base(plain, base_model, delta_model)
    elif base_model_config is not None and target_model_config is not None:
        base_width, target_width = _config_widths(base_model_config, target_model_config)
        mults = _width_mults_from_config(plain, base_width, target_width)
    else:
        raise ValueError(
            "give base_model, or both base_model_config and target_model_config ({'width': ...})"
        )
    depth_ratio = _depth_ratio(base_model_config, target_model_config)
    owners = _owners(plain)
    branches = _branch_prefixes(plain)
    infos: list[ParamInfo] = []
    by_id: dict[int, ParamInfo] = {}
    for name, param in plain.named_parameters():
        info = _classify_one(name, param, mults[name], owners[id(param)], roles)
        in_branch = any(name.startswith(prefix) for prefix in branches)
        info = replace(info, in_branch=in_branch, depth_ratio=depth_ratio if in_branch else 1.0)
        infos.append(info)
        by_id[id(param)] = info
    for i, (_, param) in enumerate(plain.named_parameters()):
        bias_mult = _bias_fan_in_mult(infos[i], owners[id(param)], by_id)
        infos[i] = replace(infos[i], bias_fan_in_mult=bias_mult)
    _check_readout(infos)
    _warn_attention(plain, mults)
    return infos


def _check_readout(infos: list[ParamInfo]) -> None:
    wide = [i for i in infos if i.role in ("input", "hidden")]
    if wide and not any(i.role == "output" for i in infos):
        raise AmbiguousParameterError(
            "the model has wide layers but no readout (a weight with wide fan-in and non-wide "
            "fan-out) was found; which parameter is the output layer? pass "
            "roles={'<name>': 'output'}"
        )


def _warn_attention(model: nn.Module, mults: Mapping[str, list[float | None]]) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            key = f"{name}.in_proj_weight" if name else "in_proj_weight"
            if key in mults and any(m is not None and m != 1.0 for m in mults[key]):
                warnings.warn(
                    f"{name or 'model'} is nn.MultiheadAttention, which scales logits by 1/sqrt(d_head);"
                    " μP needs mup_attention_scale (∝ 1/d_head) when the head size grows",
                    stacklevel=3,
                )


def _config_widths(base: Mapping[str, int], target: Mapping[str, int]) -> tuple[int, int]:
    for label, cfg in (("base_model_config", base), ("target_model_config", target)):
        if not isinstance(cfg, Mapping) or "width" not in cfg:
            raise ValueError(f"{label} must be a dict with a 'width' key, got {cfg!r}")
        check_int(f"{label}['width']", cfg["width"], 1)
    return int(base["width"]), int(target["width"])


def _depth_ratio(base: Mapping[str, int] | None, target: Mapping[str, int] | None) -> float:
    if not base or not target or "depth" not in base or "depth" not in target:
        return 1.0
    base_depth = check_int("base_model_config['depth']", base["depth"], 1)
    target_depth = check_int("target_model_config['depth']", target["depth"], 1)
    return target_depth / base_depth


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------
def mup_factors(
    info: ParamInfo,
    optimizer: str = "adamw",
    *,
    depth_alpha: float | None = 0.5,
    readout_zero_init: bool = False,
    scale_eps: bool = True,
) -> Factors:
    """LR / init / weight-decay / eps multipliers of one parameter (see the module table)."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    adam = optimizer != "sgd"
    role, m_in, m_out = info.role, info.fan_in_mult, info.fan_out_mult
    lr, eps, init = 1.0, 1.0, 1.0
    if role == "input":
        lr = 1.0 if adam else m_out
        eps = 1.0 / m_out
    elif role == "hidden":
        lr = 1.0 / m_in if adam else m_out / m_in
        eps = 1.0 / m_in
    elif role == "output":
        lr = 1.0 / m_in
        init = 0.0 if readout_zero_init else m_in**-0.5
    elif role == "vector":
        lr = 1.0 if adam else m_out
        eps = 1.0 / m_out
        init = info.bias_fan_in_mult**0.5
    elif role == "fixed":
        init = info.bias_fan_in_mult**0.5
    if info.in_branch and depth_alpha is not None:
        r = info.depth_ratio
        lr *= r ** (depth_alpha - 1.0) if adam else r ** (2.0 * depth_alpha - 1.0)
        eps *= r ** (-depth_alpha)
    if not scale_eps:
        eps = 1.0
    return Factors(lr=lr, init=init, weight_decay=1.0 / lr, eps=eps)


def describe_parametrization(
    infos: list[ParamInfo], optimizer: str = "adamw", **kwargs: Any
) -> str:
    """A text table: name, shape, role, multipliers and the factors for ``optimizer``."""
    lines = [
        f"{'parameter':<32} {'shape':<16} {'role':<7} {'m_in':>6} {'m_out':>6} {'depth':>6} "
        f"{'lr x':>8} {'init x':>8} {'eps x':>8}"
    ]
    for info in infos:
        f = mup_factors(info, optimizer, **kwargs)
        lines.append(
            f"{info.name:<32} {'x'.join(map(str, info.shape)):<16} {info.role:<7} "
            f"{info.fan_in_mult:>6.3g} {info.fan_out_mult:>6.3g} {info.depth_ratio:>6.3g} "
            f"{f.lr:>8.4g} {f.init:>8.4g} {f.eps:>8.4g}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Init and param groups
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def apply_mup_init(
    model: nn.Module, infos: list[ParamInfo], *, readout_zero_init: bool = False
) -> int:
    """Rescale the (PyTorch-default) init in place by each parameter's init factor.

    Idempotent: a parameter already rescaled (attribute ``_mup_init_done``) is left alone. Returns
    the number of parameters changed.
    """
    params = dict(unwrap_model(model).named_parameters())
    changed = 0
    for info in infos:
        param = params[info.name]
        if getattr(param, "_mup_init_done", False):
            continue
        factor = mup_factors(info, readout_zero_init=readout_zero_init).init
        if factor != 1.0:
            param.mul_(factor)
            changed += 1
        param._mup_init_done = True
    return changed


def mup_param_groups(
    model: nn.Module,
    infos: list[ParamInfo],
    lr: float,
    *,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    eps: float | None = None,
    depth_alpha: float | None = 0.5,
    scale_eps: bool = True,
) -> list[dict[str, Any]]:
    """Param groups with μP learning rates, weight decays and (Adam) eps.

    One group per distinct ``(role, factors)``, in parameter order. Each group carries ``mup_role``
    and ``mup_lr_factor`` so ``lr / mup_lr_factor`` is the base LR of every group.
    """
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    adam = optimizer != "sgd"
    if adam and eps is None:
        eps = 1e-8
    params = dict(unwrap_model(model).named_parameters())
    groups: dict[tuple, dict[str, Any]] = {}
    for info in infos:
        f = mup_factors(info, optimizer, depth_alpha=depth_alpha, scale_eps=scale_eps)
        key = (info.role, f.lr, f.weight_decay, f.eps)
        if key not in groups:
            group: dict[str, Any] = {
                "params": [],
                "lr": lr * f.lr,
                "weight_decay": weight_decay * f.weight_decay,
                "mup_role": info.role,
                "mup_lr_factor": f.lr,
            }
            if adam:
                group["eps"] = eps * f.eps
            groups[key] = group
        groups[key]["params"].append(params[info.name])
    return list(groups.values())


def mup_group_lrs(optimizer: torch.optim.Optimizer, base_lr: float) -> list[float]:
    """``base_lr × mup_lr_factor`` per group, e.g. ``OneCycleLR(opt, max_lr=mup_group_lrs(opt, 1e-2))``."""
    check_positive("base_lr", base_lr)
    return [base_lr * g.get("mup_lr_factor", 1.0) for g in optimizer.param_groups]


def check_lr_ratios(optimizer: torch.optim.Optimizer, rtol: float = 1e-6) -> bool:
    """True when ``lr / mup_lr_factor`` is the same for every μP group (μP ratios intact)."""
    bases = [g["lr"] / g["mup_lr_factor"] for g in optimizer.param_groups if "mup_lr_factor" in g]
    if len(bases) < 2:
        return True
    lo, hi = min(bases), max(bases)
    return hi - lo <= rtol * max(abs(hi), 1e-30)


# ----------------------------------------------------------------------------------------------
# The optimizers: torch's own, plus the two guards
# ----------------------------------------------------------------------------------------------
class _MuPGuards:
    """Mixin: ``step`` checks non-finite gradients and the μP LR ratios before the torch step."""

    def _init_guards(self, lr_ratio_check: str, nonfinite: str) -> None:
        self.defaults["mup_lr_ratio_check"] = check_choice(
            "lr_ratio_check", lr_ratio_check, ("warn", "raise", "ignore")
        )
        self.defaults["mup_nonfinite"] = check_choice(
            "nonfinite", nonfinite, ("skip", "raise", "ignore")
        )

    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        mode = self.defaults.get("mup_lr_ratio_check", "warn")
        if mode != "ignore" and not check_lr_ratios(self):
            message = (
                "μP learning-rate ratios between param groups changed (lr / mup_lr_factor differs): "
                "something set absolute learning rates, e.g. OneCycleLR/CyclicLR with a scalar max_lr "
                "or a non-zero eta_min/min_lr; use relative schedulers or mup_group_lrs()"
            )
            if mode == "raise":
                raise RuntimeError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        policy = self.defaults.get("mup_nonfinite", "skip")
        if policy != "ignore" and not all_finite(grads_of(self)):
            if policy == "raise":
                raise FloatingPointError("non-finite gradient; step refused (nonfinite='raise')")
            warnings.warn(
                "non-finite gradient: step skipped, state unchanged", RuntimeWarning, stacklevel=2
            )
            return loss
        step = self._torch_class.step  # type: ignore[attr-defined]
        # torch wraps a class's step with its hook runner once an instance exists; ours already
        # runs the hooks, so call the unwrapped torch step to run them once
        if getattr(step, "hooked", False):
            step = step.__wrapped__
        step(self)
        return loss


class MuPAdamW(_MuPGuards, torch.optim.AdamW):
    """``torch.optim.AdamW`` over μP param groups, with the LR-ratio and non-finite guards."""

    _torch_class = torch.optim.AdamW

    def __init__(self, params, lr_ratio_check: str = "warn", nonfinite: str = "skip", **kwargs):
        super().__init__(params, **kwargs)
        self._init_guards(lr_ratio_check, nonfinite)


class MuPAdam(_MuPGuards, torch.optim.Adam):
    """``torch.optim.Adam`` over μP param groups, with the LR-ratio and non-finite guards."""

    _torch_class = torch.optim.Adam

    def __init__(self, params, lr_ratio_check: str = "warn", nonfinite: str = "skip", **kwargs):
        super().__init__(params, **kwargs)
        self._init_guards(lr_ratio_check, nonfinite)


class MuPSGD(_MuPGuards, torch.optim.SGD):
    """``torch.optim.SGD`` over μP param groups, with the LR-ratio and non-finite guards."""

    _torch_class = torch.optim.SGD

    def __init__(self, params, lr_ratio_check: str = "warn", nonfinite: str = "skip", **kwargs):
        super().__init__(params, **kwargs)
        self._init_guards(lr_ratio_check, nonfinite)


_CLASSES = {"adamw": MuPAdamW, "adam": MuPAdam, "sgd": MuPSGD}


def create_mu_transfer_optimizer(
    large_model: nn.Module,
    base_model_config: Mapping[str, int] | None = None,
    target_model_config: Mapping[str, int] | None = None,
    base_hyperparams: Mapping[str, Any] | None = None,
    optimizer: str = "adamw",
    *,
    base_model: nn.Module | Mapping[str, Iterable[int]] | None = None,
    delta_model: nn.Module | Mapping[str, Iterable[int]] | None = None,
    parametrization: str = "mup",
    depth_alpha: float | None = 0.5,
    roles: Mapping[str, str] | None = None,
    readout_zero_init: bool = False,
    rescale_init: bool = True,
    scale_eps: bool = True,
    allow_coupled_weight_decay: bool = False,
    lr_ratio_check: str = "warn",
    nonfinite: str = "skip",
) -> torch.optim.Optimizer:
    """A torch optimizer for ``large_model`` with μP groups, from hyperparameters tuned on the base.

    ``base_model_config`` / ``target_model_config``: ``{'width': w, 'depth': L}`` of the proxy the
    hyperparameters were tuned on and of ``large_model`` (``depth`` optional; a depth change needs
    :class:`DepthScaledResidual` branches). Alternatively ``base_model``: a narrow instance (or its
    shapes), optionally with ``delta_model`` (another width) to mark the wide dims explicitly.
    ``base_hyperparams``: ``lr`` (required), ``weight_decay`` (0), and ``eps``/``betas`` (Adam) or
    ``momentum``/``nesterov``/``dampening`` (SGD). Also rescales the init
    (``rescale_init``), sets the residual branch multipliers, and returns a :class:`MuPAdamW` /
    :class:`MuPAdam` / :class:`MuPSGD`. ``parametrization='sp'`` gives the same optimizer with every
    factor 1 (the SP control).
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("parametrization", parametrization, ("mup", "sp"))
    if depth_alpha is not None:
        check_range("depth_alpha", depth_alpha, 0.0, 1.0)
    hyper = dict(base_hyperparams or {})
    if "lr" not in hyper:
        raise ValueError(
            "base_hyperparams must contain 'lr', e.g. {'lr': 1e-3, 'weight_decay': 0.01}"
        )
    lr = check_positive("base_hyperparams['lr']", hyper.pop("lr"))
    weight_decay = check_nonnegative(
        "base_hyperparams['weight_decay']", hyper.pop("weight_decay", 0.0)
    )
    allowed = (
        ("eps", "betas", "amsgrad") if optimizer != "sgd" else ("momentum", "nesterov", "dampening")
    )
    for key in hyper:
        check_choice("base_hyperparams key", key, ("lr", "weight_decay", *allowed))
    if optimizer == "adam" and weight_decay > 0 and not allow_coupled_weight_decay:
        raise ValueError(
            "optimizer='adam' with weight_decay > 0 is Adam with coupled (L2) weight decay, which "
            "μP does not make width-invariant; use optimizer='adamw' (decoupled), or pass "
            "allow_coupled_weight_decay=True if you really mean L2 regularisation"
        )
    eps = hyper.pop("eps", 1e-8) if optimizer != "sgd" else None
    if parametrization == "sp":
        infos = [
            ParamInfo(n, tuple(p.shape), "fixed")
            for n, p in unwrap_model(large_model).named_parameters()
        ]
    else:
        infos = classify_parameters(
            large_model,
            base_model,
            base_model_config=base_model_config,
            target_model_config=target_model_config,
            roles=roles,
            delta_model=delta_model,
        )
        _apply_depth(large_model, base_model_config, target_model_config, depth_alpha)
        if rescale_init:
            apply_mup_init(large_model, infos, readout_zero_init=readout_zero_init)
    groups = mup_param_groups(
        large_model,
        infos,
        lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        eps=eps,
        depth_alpha=depth_alpha,
        scale_eps=scale_eps,
    )
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, **hyper}
    if eps is not None:
        kwargs["eps"] = eps
    return _CLASSES[optimizer](groups, lr_ratio_check=lr_ratio_check, nonfinite=nonfinite, **kwargs)


def _apply_depth(
    model: nn.Module,
    base: Mapping[str, int] | None,
    target: Mapping[str, int] | None,
    alpha: float | None,
) -> None:
    ratio = _depth_ratio(base, target)
    if alpha is None:
        return
    count = set_depth_multipliers(model, ratio, alpha)
    if ratio != 1.0 and count == 0:
        raise ValueError(
            f"depth changes from {base['depth']} to {target['depth']} but the model has no "
            "DepthScaledResidual branches, so depth transfer cannot be applied; wrap each residual "
            "branch in DepthScaledResidual, or pass depth_alpha=None to transfer width only"
        )
