r"""SigProp's layer-local losses between a layer's outputs for the inputs and for the class signals.

With :math:`S_{ij} = \langle h_i, t_j\rangle / P` (:math:`P` spatial positions of a conv map, the
official spatial mean) and :math:`G` the similarity of the layer's *input* class signals (one-hot
labels at layer 1), over the batch columns :math:`j`:

.. math::
    \begin{aligned}
    \texttt{v14}:\ & L = \tfrac1B\textstyle\sum_i -\log\mathrm{softmax}_j(S_{i\cdot})_{j^*_i},
        \quad j^*_i = \arg\max_j G_{ij} \\
    \texttt{topk}:\ & L = \tfrac1B\textstyle\sum_i \sum_{j \in \mathrm{topk}_j G_{i\cdot}}
        -\log\mathrm{softmax}_j(S_{i\cdot})_j \\
    \texttt{max\_all}:\ & \text{as topk over every } j \text{ with } G_{ij} = \max_j G_{ij} \\
    \texttt{l2}:\ & L = \mathrm{mean}_{i,f}\,(h_i - t_{y_i})_f^2
    \end{aligned}

(official ``v14_input_target_max_rand``, ``v15_input_target_topk``, ``v9_input_target_max_all``;
``l2`` from re-implementations). The signals are computed per class, not per sample; a
cross-entropy over the batch columns equals one over the classes with logits
:math:`S_K + \log n_k` (exact; ``docs/algorithms/sigprop.md``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["LOCAL_LOSSES", "column_log_counts", "local_loss", "signal_similarity"]

LOCAL_LOSSES = ("v14", "topk", "max_all", "l2")


def _spatial_positions(t: torch.Tensor) -> int:
    """P: positions averaged over by the official conv similarity (1 for vectors)."""
    return math.prod(t.shape[2:]) if t.dim() > 2 else 1


def signal_similarity(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``S[i, k] = <h_i, t_k> / P``: the official similarity (channel dot product, spatial mean)."""
    s = h.flatten(1) @ t.flatten(1).t()
    positions = _spatial_positions(t)
    return s / positions if positions > 1 else s


def column_log_counts(cols: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``log n_k``: log of how many batch columns have class k (``-inf`` for absent classes).

    The same for every layer of one batch, so a network computes it once per training step.
    """
    # bincount's output size depends on the data (a host sync on accelerators; no meta kernel)
    counts = torch.zeros(num_classes, dtype=dtype, device=cols.device)
    return counts.index_add_(
        0, cols, torch.ones(cols.shape, dtype=dtype, device=cols.device)
    ).log_()


def _class_target_rows(g_class: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``G[k, j]`` over the batch columns j, one row per class: a sample's row is its class's."""
    return g_class.index_select(1, cols)


def _target_classes_argmax(g_class: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per class k: the class of ``argmax_j G[k, j]`` over batch columns (first maximum)."""
    return cols[_class_target_rows(g_class, cols).argmax(dim=1)]


def _target_counts_topk(g_class: torch.Tensor, cols: torch.Tensor, k: int) -> torch.Tensor:
    """``m[k, c]`` = how many of the top-k batch columns of ``G[k, :]`` have class c."""
    g = _class_target_rows(g_class, cols)
    picks = g.topk(min(k, g.shape[1]), dim=1).indices
    return F.one_hot(cols[picks], g_class.shape[0]).sum(dim=1).to(g_class.dtype)


def _target_counts_max_all(g_class: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``m[k, c]`` = how many batch columns of class c attain ``max_j G[k, j]``."""
    g = _class_target_rows(g_class, cols)
    hits = (g == g.max(dim=1, keepdim=True).values).to(g_class.dtype)
    return hits @ F.one_hot(cols, g_class.shape[0]).to(g_class.dtype)


def local_loss(
    kind: str,
    h: torch.Tensor,
    t_class: torch.Tensor,
    g_class: torch.Tensor,
    y: torch.Tensor,
    topk: int = 6,
    column_labels: torch.Tensor | None = None,
    *,
    log_counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local loss of one layer and the B x K class scores of ``h``.

    ``h``: (B, ...) layer output of the inputs; ``t_class``: (K, ...) layer output of the class
    signals; ``g_class``: (K, K) similarity of the layer's *input* class signals; ``y``: (B,) labels.
    ``column_labels``: labels of the batch columns ``j`` (default ``y``; under data parallelism the
    whole global batch's, so a shard's rows see the columns a single process would).
    ``log_counts``: :func:`column_log_counts` of the columns, if already computed for this batch.
    The scores are ``S_K`` for the CE losses and ``-mean_f (h - t_k)_f^2`` for ``l2``.
    """
    cols = y if column_labels is None else column_labels
    if kind == "l2":
        hf, tf = h.flatten(1), t_class.flatten(1)
        loss = (hf - tf[y]).pow(2).mean()
        with torch.no_grad():
            scores = -(torch.cdist(hf, tf).pow(2)) / hf.shape[1]
        return loss, scores
    s_class = signal_similarity(h, t_class)
    if log_counts is None:
        log_counts = column_log_counts(cols, t_class.shape[0], s_class.dtype)
    # a batch column of class k has logit S_K[i, k]; the n_k columns of class k together weigh
    # n_k exp S_K[i, k], i.e. the class logits S_K + log n_k (log 0 = -inf drops absent classes)
    logits = s_class + log_counts.to(s_class.dtype)
    with torch.no_grad():
        if kind == "v14":
            target = _target_classes_argmax(g_class, cols)[y]
        elif kind == "topk":
            counts = _target_counts_topk(g_class, cols, topk)[y]
        else:
            counts = _target_counts_max_all(g_class, cols)[y]
    if kind == "v14":
        # -log p(one column of the target class) = CE(class logits) + log n_target (a constant)
        loss = F.cross_entropy(logits, target) + log_counts[target].mean().to(logits.dtype)
    else:
        log_p = s_class - logits.logsumexp(dim=1, keepdim=True)
        loss = -(counts.to(log_p.dtype) * log_p).sum(dim=1).mean()
    return loss, s_class.detach()
