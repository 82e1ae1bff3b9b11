r"""LoCal's localized rules: Oja's subspace rule (default) or normalised Hebb, on unit filter directions.

For a layer with weight :math:`W` (:math:`m` units; a Conv2d filter is a row of length
:math:`n = C_{in} k_h k_w`), unit rows :math:`\hat w_j = w_j/\lVert w_j\rVert`, input rows
:math:`x_r` (samples for Linear, receptive-field patches for Conv2d) and responses
:math:`\hat y_{rj} = \hat w_j \cdot x_r` (read off the layer's own output):

.. math::
    \Delta\hat W = \frac{\hat Y^\top X - (\hat Y^\top \hat Y)\,\hat W}{\sum_r \lVert x_r\rVert^2},
    \qquad \hat w_j \leftarrow \frac{\hat w_j + \eta\,\Delta\hat w_j}
    {\lVert \hat w_j + \eta\,\Delta\hat w_j \rVert},
    \qquad w_j \leftarrow \lVert w_j\rVert\,\hat w_j

``rule="normalized_hebb"`` drops the decorrelating term: :math:`\Delta\hat W = \hat Y^\top X /
\sum_r \lVert x_r\rVert^2` (plain Hebb :math:`\Delta w_j \propto y_j x`, then each row normalised;
the same step). Numerator and energy are sums over rows, so the terms of several forward passes or
data-parallel shards add up exactly. Why these rules, and their cost: ``docs/algorithms/localized.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight

__all__ = [
    "RULES",
    "apply_direction_step",
    "normalized_hebb_terms",
    "oja_subspace_direction",
    "oja_subspace_terms",
]


def oja_subspace_terms(
    layer: nn.Module, x: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator ``ŶᵀX − (ŶᵀŶ)Ŵ`` (shape of ``layer.weight``) and energy ``Σ_r ||x_r||²`` (0-dim).

    Both are sums over the rows ``r``, so the terms of several shards (or forward passes) add up to
    the terms of their union; the direction is their ratio (:func:`oja_subspace_direction`).
    """
    return _terms(layer, x, out, decorrelate=True)


def normalized_hebb_terms(
    layer: nn.Module, x: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator ``ŶᵀX`` (plain Hebb, shape of ``layer.weight``) and energy ``Σ_r ||x_r||²``.

    The step (:func:`apply_direction_step`) normalises each row afterwards: normalised Hebb.
    """
    return _terms(layer, x, out, decorrelate=False)


def _terms(
    layer: nn.Module, x: torch.Tensor, out: torch.Tensor, decorrelate: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    weight = layer.weight
    norms = weight.flatten(1).norm(dim=1).clamp_min(torch.finfo(weight.dtype).tiny)
    unit = weight.flatten(1) / norms[:, None]
    if isinstance(layer, nn.Conv2d):
        numerator, energy = _conv_terms(layer, x, out, unit, norms, decorrelate)
        return numerator.view_as(weight), energy
    return _linear_terms(layer, x, out, unit, norms, decorrelate)


def oja_subspace_direction(layer: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``ΔŴ = (ŶᵀX − (ŶᵀŶ)Ŵ) / Σ_r ||x_r||²`` for ``layer`` given its input ``x`` and output ``out``.

    Returned in the shape of ``layer.weight``. ``Ŵ`` are the unit rows of the weight, ``ŷ = (out − b) /
    ||w||`` the responses of those unit rows; rows ``x_r`` are samples (Linear) or patches (Conv2d).
    """
    numerator, energy = oja_subspace_terms(layer, x, out)
    return numerator / energy.clamp_min(torch.finfo(numerator.dtype).tiny)


def _linear_terms(
    layer: nn.Linear,
    x: torch.Tensor,
    out: torch.Tensor,
    unit: torch.Tensor,
    norms: torch.Tensor,
    decorrelate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.reshape(-1, x.shape[-1])
    pre = out.reshape(-1, out.shape[-1])
    if layer.bias is not None:
        pre = pre - layer.bias
    responses = pre / norms
    if not decorrelate:
        return responses.t() @ rows, rows.pow(2).sum()
    n_rows, m = responses.shape
    n = rows.shape[1]
    if n_rows * m * n <= n_rows * m * m + m * m * n:  # Ŷᵀ(X − ŶŴ): reconstruction-error form
        update = responses.t() @ (rows - responses @ unit)
    else:  # ŶᵀX − (ŶᵀŶ)Ŵ: Gram form
        update = responses.t() @ rows - (responses.t() @ responses) @ unit
    return update, rows.pow(2).sum()


def _conv_terms(
    layer: nn.Conv2d,
    x: torch.Tensor,
    out: torch.Tensor,
    unit: torch.Tensor,
    norms: torch.Tensor,
    decorrelate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    pre = out if layer.bias is None else out - layer.bias.view(1, -1, 1, 1)
    responses = pre / norms.view(1, -1, 1, 1)
    geometry = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
    hebb = conv2d_weight(x, layer.weight.shape, responses, **geometry).flatten(1)  # Σ_r ŷ_r x_rᵀ
    window = torch.ones(1, 1, *layer.kernel_size, dtype=x.dtype, device=x.device)
    energy = F.conv2d(x.pow(2).sum(1, keepdim=True), window, **geometry).sum()  # Σ_r ||x_r||²
    if not decorrelate:
        return hebb, energy
    flat = responses.transpose(0, 1).reshape(responses.shape[1], -1)
    decay = (flat @ flat.t()) @ unit
    return hebb - decay, energy


def apply_direction_step(
    weight: torch.Tensor, direction: torch.Tensor, rate: float | torch.Tensor
) -> None:
    """In place: ``ŵ ← normalise(ŵ + rate·Δŵ)`` row by row, keeping every row's norm ``||w||``.

    ``rate`` may be a 0-dim tensor (the gated rate, kept on the device: no host sync); a zero rate
    leaves the weight exactly as it is.
    """
    if not isinstance(rate, torch.Tensor) and rate == 0.0:
        return
    flat = weight.view(weight.shape[0], -1)
    norms = flat.norm(dim=1, keepdim=True)
    unit = flat / norms.clamp_min(torch.finfo(weight.dtype).tiny)
    moved = unit + rate * direction.reshape_as(flat)
    moved = moved / moved.norm(dim=1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
    if isinstance(rate, torch.Tensor):
        moved = torch.where(rate > 0, moved * norms, flat)
        flat.copy_(moved)
    else:
        flat.copy_(moved * norms)


# the localized rules by name (``LocalizedOptimizer(rule=...)``): (layer, x, out) -> (numerator, energy)
RULES = {"oja_subspace": oja_subspace_terms, "normalized_hebb": normalized_hebb_terms}
