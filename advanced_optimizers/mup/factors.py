"""The μP table: each parameter's LR, init, weight-decay and Adam-eps multipliers relative to SP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._validation import check_choice, check_positive
from .classification import ParamInfo

__all__ = ["OPTIMIZERS", "Factors", "describe_parametrization", "mup_factors"]

OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass(frozen=True)
class Factors:
    """Multipliers relative to SP: learning rate, init std, weight decay and Adam eps."""

    lr: float
    init: float
    weight_decay: float
    eps: float


def mup_factors(
    info: ParamInfo,
    optimizer: str = "adamw",
    *,
    depth_alpha: float | None = 0.5,
    readout_zero_init: bool = False,
    scale_eps: bool = True,
    readout_multiplier: float = 1.0,
    init_scale: float = 1.0,
) -> Factors:
    r"""LR / init / weight-decay / eps multipliers of one parameter, relative to SP.

    With the width multipliers :math:`m_\text{in}`, :math:`m_\text{out}` of the parameter's fan-in /
    fan-out (``info.fan_in_mult`` / ``fan_out_mult``; for a vector both are its :math:`m`)::

        role     init std (× torch default)   Adam/AdamW LR   SGD LR          Adam eps
        input    1                            1               m_out           1/m_out
        hidden   1                            1/m_in          m_out/m_in      1/m_in
        output   1/√m_in   (0: zero init)     1/m_in          1/m_in          1
        vector   √b (a bias), else 1          1               m               1/m
        fixed    √b (a bias), else 1          1               1               1

    This is μP without forward multipliers (Tensor Programs V, Table 3): torch's default init
    already has std :math:`\propto 1/\sqrt{\text{fan\_in}}`, so only the readout's (to
    :math:`1/\text{fan\_in}`) and the biases' (``b = info.bias_fan_in_mult``: torch's
    :math:`U(\pm 1/\sqrt{\text{fan\_in}})` made width-constant) change. When torch's init fan is
    not the fan-in (a transposed convolution: ``info.init_fan_mult`` :math:`= m_\text{out}`), the
    init factor is further multiplied by :math:`\sqrt{\text{init\_fan\_mult} / m_\text{in}}`.
    ``readout_zero_init`` zeroes the readout weight *and* its bias. Weight decay: ``1 / lr factor``,
    so the per-step decay ``lr·wd`` is width-independent. ``scale_eps=False`` keeps eps at 1×.
    Inside a :class:`~.depth.DepthScaledResidual` branch (``depth_alpha`` not ``None``), with
    :math:`r` = ``info.depth_ratio`` and :math:`\alpha` = ``depth_alpha``: LR
    :math:`\times r^{\alpha-1}` (Adam) or :math:`\times r^{2\alpha-1}` (SGD), eps
    :math:`\times r^{-\alpha}`. At multiplier 1 every factor is exactly 1.0.

    Two tuned multipliers of μTransfer (Tensor Programs V, §4 and App. F), both 1.0 by default
    (then nothing changes):

    * ``readout_multiplier`` :math:`\alpha_\text{out}`: mup's ``MuReadout(output_mult=α)``, whose
      forward is :math:`W (\alpha x / m) + b`, in this no-multiplier form: the readout *weight*'s
      init × α, its LR × α (Adam) or × α² (SGD), its weight decay ÷ the same (per-step decay kept).
      In general a weight used as :math:`c\,W` behaves as a weight :math:`W' = cW` with init × c,
      Adam LR × c, SGD LR × c², eps ÷ c (Adam is invariant to the gradient's scale but for eps).
      The readout's eps is not changed (its gradient in this form does not depend on α), so Adam
      matches an explicit-multiplier model exactly when that model's readout eps is
      ``eps·α/m_in`` (as eps → 0, for any eps). The readout bias is not multiplied (mup adds it
      after the multiplier).
    * ``init_scale`` σ: multiplies the init std of every *weight* (every parameter with ≥ 2 dims:
      input, hidden and readout weights, embeddings), as the μTransfer paper's tuned
      "initialization std" (mup's examples multiply the weights' init by ``init_std``). Biases and
      other 1-D parameters (norm gains) keep their init: σ = 0.5 must not halve a LayerNorm gain.
      LRs are not changed.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_positive("readout_multiplier", readout_multiplier)
    check_positive("init_scale", init_scale)
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
        init = m_in**-0.5
    elif role == "vector":
        lr = 1.0 if adam else m_out
        eps = 1.0 / m_out
        init = info.bias_fan_in_mult**0.5
    elif role == "fixed":
        init = info.bias_fan_in_mult**0.5
    if info.init_fan_mult is not None and info.init_fan_mult != m_in:
        init *= (info.init_fan_mult / m_in) ** 0.5
    if role == "output" and readout_multiplier != 1.0:
        init *= readout_multiplier
        lr *= readout_multiplier if adam else readout_multiplier**2
    if init_scale != 1.0 and len(info.shape) >= 2:
        init *= init_scale
    if readout_zero_init and (role == "output" or info.readout_bias):
        init = 0.0
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
