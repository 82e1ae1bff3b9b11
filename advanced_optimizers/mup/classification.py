"""Each parameter's μP role and width multipliers (:func:`classify_parameters`)."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from .._validation import check_choice
from .depth import DepthScaledResidual
from .shapes import (
    EMBEDDINGS,
    Owners,
    Shapes,
    config_depth_ratio,
    config_widths,
    mults_from_base,
    mults_from_config,
    owners_of,
    param_layout,
    strip_prefix,
    unwrap_model,
)

__all__ = ["ROLES", "AmbiguousParameterError", "ParamInfo", "classify_parameters", "unwrap_model"]

ROLES = ("input", "hidden", "output", "vector", "fixed")


class AmbiguousParameterError(ValueError):
    """A parameter's μP role cannot be decided from the model; pass ``roles={name: role}``."""


@dataclass(frozen=True)
class ParamInfo:
    """How one parameter scales: its role, width multipliers and residual-depth ratio.

    ``fan_in_mult`` / ``fan_out_mult``: ``dim / base_dim`` of the fan-in (the dim the forward sums
    over) / fan-out (1 if not wide; for a vector both equal its multiplier). ``bias_fan_in_mult``:
    for a bias, ``init_fan_mult`` of its layer (its init is scaled by its square root), else 1.
    ``depth_ratio``: ``L / L0`` if the parameter lives in a :class:`~.depth.DepthScaledResidual`
    branch, else 1. ``init_fan_mult``: multiplier of the fan torch's default init divides by
    (``torch.nn.init._calculate_fan_in_and_fan_out``: dim 1, which for a transposed convolution,
    weight ``(in, out/groups, k...)``, is the *output* channels); ``None`` means ``fan_in_mult``.
    ``readout_bias``: the bias of a layer whose weight is the ``output``.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    fan_in_mult: float = 1.0
    fan_out_mult: float = 1.0
    bias_fan_in_mult: float = 1.0
    depth_ratio: float = 1.0
    in_branch: bool = False
    init_fan_mult: float | None = None
    readout_bias: bool = False


def _check_roles(roles: Mapping[str, str], names: list[str]) -> dict[str, str]:
    """``roles`` with prefixes stripped; every value a role, every key matching some parameter."""
    checked = {}
    for key, role in roles.items():
        check_choice(f"roles[{key!r}]", role, ROLES)
        pattern = strip_prefix(key)
        if not any(n == pattern or fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ValueError(
                f"roles key {key!r} matches no parameter of the model; keys are parameter names or "
                f"glob patterns over them, e.g. {names[:6]}"
            )
        checked[pattern] = role
    return checked


def _classify_one(
    name: str,
    param: torch.Tensor,
    dims: list[float | None],
    owners: Owners,
    roles: Mapping[str, str],
) -> ParamInfo:
    shape, wide = tuple(param.shape), [m for m in dims if m is not None]
    for pattern, role in roles.items():
        if pattern == name or fnmatch.fnmatchcase(name, pattern):
            mult = max(wide, default=1.0)
            return ParamInfo(name, shape, role, mult, mult)
    if param.ndim <= 1:
        mult = wide[0] if wide else 1.0
        return ParamInfo(name, shape, "vector" if wide else "fixed", mult, mult)
    layouts = {param_layout(module, local, param) for _, module, local in owners}
    if len(layouts) > 1:
        holders = ", ".join(f"{mn or '<root>'}.{local}" for mn, _, local in owners)
        raise AmbiguousParameterError(
            f"parameter {name!r} is shared by modules with different layouts ({holders}), e.g. a "
            f"tied embedding/readout; which role should it have? pass roles={{{name!r}: 'input' or "
            "'output'}}"
        )
    lay = layouts.pop()
    if lay is None:
        if not wide:
            return ParamInfo(name, shape, "fixed")
        raise AmbiguousParameterError(
            f"parameter {name!r} (shape {shape}) belongs to {type(owners[0][1]).__name__}, whose "
            "fan-in/fan-out layout is unknown; is it an input, hidden or output (readout) weight? "
            f"pass roles={{{name!r}: one of {ROLES}}}"
        )
    if any(m is not None for i, m in enumerate(dims) if i not in lay):
        raise AmbiguousParameterError(
            f"parameter {name!r} has a wide dimension besides fan-in/fan-out; which role is it? "
            f"pass roles={{{name!r}: one of {ROLES}}}"
        )
    m_out, m_in = dims[lay[0]], dims[lay[1]]
    role = {(False, False): "fixed", (True, False): "input", (True, True): "hidden"}.get(
        (m_out is not None, m_in is not None), "output"
    )
    # torch's default init divides by dim 1 (kaiming/xavier fan_in); embeddings draw N(0, 1)
    init_fan = None if isinstance(owners[0][1], EMBEDDINGS) else dims[1] or 1.0
    return ParamInfo(name, shape, role, m_in or 1.0, m_out or 1.0, init_fan_mult=init_fan)


def _with_layer(info: ParamInfo, owners: Owners, by_id: dict[int, ParamInfo]) -> ParamInfo:
    """A bias gets its layer's init fan multiplier and whether the layer is the readout."""
    for _, module, local in owners:
        if local == "bias" and isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            weight = by_id.get(id(module.weight))
            if weight is not None:
                fan = weight.fan_in_mult if weight.init_fan_mult is None else weight.init_fan_mult
                mult = fan if info.role in ("vector", "fixed") else 1.0
                return replace(info, bias_fan_in_mult=mult, readout_bias=weight.role == "output")
    return info


def classify_parameters(
    model: nn.Module,
    base_model: Shapes | None = None,
    *,
    base_model_config: Mapping[str, int] | None = None,
    target_model_config: Mapping[str, int] | None = None,
    roles: Mapping[str, str] | None = None,
    delta_model: Shapes | None = None,
) -> list[ParamInfo]:
    """Classify every parameter of ``model`` as input / hidden / output / vector / fixed.

    A weight's role follows from which of its fan-in / fan-out dims are wide (grow with width)::

        fan-in \\ fan-out    finite     wide
        finite              fixed      input
        wide                output     hidden

    and a ≤1-D parameter is a ``vector`` if wide, else ``fixed``. The layout (which dim is the
    fan-in) comes from the owning module: ``Linear``, ``Conv*`` (transposed convolutions: dim 0),
    ``Embedding`` (``(vocab, dim)``: an input), ``MultiheadAttention``. Which dims are wide:

    * ``base_model`` (a narrower instance of the architecture, or a dict ``name → shape``): the dims
      that differ from the base; with ``delta_model`` (another width), those where base and delta
      differ, so roles are known even at multiplier 1. Exact; recommended for custom models.
    * ``base_model_config`` / ``target_model_config`` (``{'width': w, 'depth': L}``), multiplier
      ``m = w / w0``, judged from the target model's shapes: a fan-in / fan-out dim (or a 1-D
      parameter) is wide iff its size ``s`` is (a) ``w``; or (b) ``k·w`` (integer ``k ≥ 2``) computed
      by some layer from a wide size (an MLP expansion ``4w``, a fused QKV ``3w``; repeated to a
      fixed point), unless ``s`` is an embedding's vocabulary; or (c) ``k·w`` feeding a layer whose
      fan-out is no multiple of ``w`` while no layer computes it (``w`` channels flattened into the
      readout). A multiple of ``w`` that is only ever an input (784 pixels at ``w = 112``, 3072 at
      ``w = 512``) is not wide. Sizes are compared by value: a raw input of exactly ``w`` features,
      or wide dims no layer reveals (``w`` channels flattened into a hidden ``Linear``), need
      ``base_model``.

    ``roles`` overrides by exact name or glob pattern (``'blocks.*.attn.in_proj_weight'``); a key
    that matches no parameter raises ``ValueError``. An undecidable parameter (unknown layout, tied
    between different layouts, a wide dim besides fan-in/fan-out, no readout) raises
    :class:`AmbiguousParameterError` naming it.
    """
    plain = unwrap_model(model)
    owners = owners_of(plain)
    names = [n for n, _ in plain.named_parameters()]
    roles = _check_roles(roles or {}, names)
    if base_model is not None:
        mults = mults_from_base(plain, base_model, delta_model)
    elif base_model_config is not None and target_model_config is not None:
        base_width, width = config_widths(base_model_config, target_model_config)
        mults = mults_from_config(plain, owners, base_width, width)
    else:
        raise ValueError(
            "give base_model, or both base_model_config and target_model_config ({'width': ...})"
        )
    depth_ratio = config_depth_ratio(base_model_config, target_model_config)
    branches = [f"{n}." for n, m in plain.named_modules() if isinstance(m, DepthScaledResidual)]
    infos, by_id = [], {}
    for name, param in plain.named_parameters():
        info = _classify_one(name, param, mults[name], owners[id(param)], roles)
        in_branch = any(name.startswith(prefix) for prefix in branches)
        info = replace(info, in_branch=in_branch, depth_ratio=depth_ratio if in_branch else 1.0)
        infos.append(info)
        by_id[id(param)] = info
    params = [p for _, p in plain.named_parameters()]
    infos = [_with_layer(i, owners[id(p)], by_id) for i, p in zip(infos, params, strict=True)]
    _check_readout(infos)
    _warn_attention(plain, mults)
    return infos


def _check_readout(infos: list[ParamInfo]) -> None:
    if any(i.role in ("input", "hidden") for i in infos) and not any(
        i.role == "output" for i in infos
    ):
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
                    f"{name or 'model'} is nn.MultiheadAttention, which scales logits by "
                    "1/sqrt(d_head); μP needs mup_attention_scale (∝ 1/d_head) when the head size "
                    "grows",
                    stacklevel=3,
                )
