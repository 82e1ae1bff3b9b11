"""Signal Propagation (SigProp): every layer learns in the forward pass from a label signal.

Kohan, Rietman, Siegelmann, "Signal Propagation: The Framework for Learning and Inference in a
Forward Pass" (arXiv 2204.01723, IEEE TNNLS 2023); official code github.com/amassivek/signalpropagation
(``sigprop/signals/generators.py``, ``sigprop/propagators/learn.py``,
``sigprop/loss/functional/input_target.py``, ``examples/``).

The algorithm
-------------
The label ``y`` becomes a learning signal at the *front* of the network::

    t_1 = ReLU(LayerNorm(W_s · onehot(y)))          (bias-free Linear, reshaped to layer 1's output)
    h_1 = g_1(x)

and every later layer ``g_l`` (l = 2..L) takes the *detached* pair of the previous layer and applies
the same weights to both::

    h_l = g_l(sg[h_{l-1}]),    t_l = g_l(sg[t_{l-1}])              (sg = stop-gradient)

Layer ``l`` (and, at ``l = 1``, the signal projection ``W_s``) is trained only by its local loss
``L_l(h_l, t_l; t_{l-1})``; the output layer ``f`` sees ``sg[h_L]`` and is trained by cross-entropy.
No gradient crosses a layer boundary, so one ``backward()`` of ``sum_l L_l + CE(f(sg[h_L]), y)``
yields exactly the per-layer local gradients.

Local losses (``loss=``), with ``S[i,j] = <h_i, t_j> / P`` (P = spatial positions of a conv map, so S
is the official spatial mean of channel dot products) and the *input*-signal similarity
``G[i,j] = <t^{in}_i, t^{in}_j> / P`` (``t^{in}`` = one-hot labels at layer 1)::

    "v14"     (official v14_input_target_max_rand):  L = CE(S[i, :], argmax_j G[i, j])
    "topk"    (official v15_input_target_topk):      L = mean_i sum_{j in topk_j G[i,:]} -log softmax_j S[i, j]
    "max_all" (official v9_input_target_max_all):    L = mean_i sum_{j : G[i,j] = max G[i,:]} -log softmax_j S[i, j]
    "l2"      (re-implementations):                  L = mean_{i,f} (h_i - t_i)_f^2

The soft targets of ``topk``/``max_all`` are sums of one-hots, not normalised, as in the official
``soft_target_cross_entropy``. Columns ``j`` range over the batch, as in the official code.

Inference needs no label: ``forward(x)`` gives the output layer's logits; ``predict_by_signal(x)``
scores ``x`` against each class's signal at a hidden layer (``S`` for the CE losses, ``-||h - t_k||^2``
for ``l2``) — the paper's alternative.

Design choices where the paper/official code is silent or where this library differs
-------------------------------------------------------------------------------------
* **Class-level signals (exact).** The layers here are deterministic (Linear/Conv, ReLU or LeakyReLU,
  max-pool; no dropout, no batch statistics), so ``t_l`` of a sample depends only on its class. The
  signal path is computed for the K classes (``t_l`` is K x ...) instead of the B samples and gathered
  by label. This is exact: ``S[i, j] = S_K[i, y_j]``, ``G[i, j] = G_K[y_i, y_j]``, and a cross-entropy
  over the B batch columns equals one over the K classes with logits ``S_K[i, k] + log n_k`` (``n_k``
  = samples of class k in the batch; absent classes get ``-inf``). Targets are still chosen on the
  B x B matrix ``G`` (first maximum in batch order, as ``torch.argmax`` does officially), so ties break
  as in the official code. Cost of the signal path: O(K) rows instead of O(B).
* **Layer 1 = the official "input module".** The official examples put an extra input block
  (``ProjectionContextInput``) in front of the network and train it together with the signal
  projection by the first loss (target ``G`` = one-hot similarity). Here the network's own first layer
  plays that role, so a SigProp net has exactly the layers of the backprop net it is compared with.
* **Inputs and signals as one batch.** From block 2 on, ``[h; t]`` (B + K rows) goes through the
  block in one call, so each layer runs one forward GEMM and one weight-gradient GEMM instead of two
  of each plus a gradient accumulation. Exact for per-sample layers (the same condition as above).
* **One optimizer, one backward.** The official code gives each layer its own optimizer and steps it
  inside the forward pass. Because every layer input is detached, summing the losses and calling
  ``backward()`` once gives the same gradients, and Adam is per-parameter, so one Adam with two
  parameter groups (layers, and the signal projection at ``signal_lr``) is the same algorithm.
* **Layer-wise backward for memory** (``layerwise_backward=True``). A single backward of the sum keeps
  every layer's autograd graph alive until the end, so activation memory grows with depth exactly as in
  backprop. With ``layerwise_backward=True`` the training path back-propagates each local loss as soon
  as it is computed (as the official per-layer optimizers do) and frees that layer's graph; the
  returned tensor then has the same *value* (sum of all losses) but carries only the output layer's
  graph, and ``.grad`` of the hidden layers is already filled. Use it in the usual order
  ``zero_grad() → loss = model.training_loss(x, y, layerwise_backward=True) → loss.backward() →
  step()`` (``zero_grad`` must come *before* the training path).
* **Non-finite gradients** (:class:`SigPropAdam`): if any gradient is NaN/inf the whole step is
  skipped with a warning, so parameters and Adam moments stay finite; the count is kept in each
  param group's ``"nonfinite_skips"`` (part of the state dict).
* **Output layer learning rate**: the same ``lr`` as the hidden layers (official: one ``args.lr``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._finite import all_finite, grads_of
from ._validation import check_choice, check_int, check_nonnegative, check_positive

__all__ = [
    "LOCAL_LOSSES",
    "SigPropAdam",
    "SigPropCNN",
    "SigPropNet",
    "create_sigprop_optimizer",
    "local_loss",
]

LOCAL_LOSSES = ("v14", "topk", "max_all", "l2")
ACTIVATIONS = ("relu", "leaky_relu")


# ---------------------------------------------------------------------------------------------
# Local losses on class-level signals
# ---------------------------------------------------------------------------------------------
def _spatial_positions(t: torch.Tensor) -> int:
    """P: positions averaged over by the official conv similarity (1 for vectors)."""
    return math.prod(t.shape[2:]) if t.dim() > 2 else 1


def signal_similarity(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``S[i, k] = <h_i, t_k> / P``: the official similarity (channel dot product, spatial mean)."""
    s = h.flatten(1) @ t.flatten(1).t()
    positions = _spatial_positions(t)
    return s / positions if positions > 1 else s


def _batch_class_logits(s_class: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``S_K + log n_k``: their logsumexp equals that of the B batch columns ``S_K[i, y_j]``."""
    counts = torch.bincount(cols, minlength=s_class.shape[1]).to(s_class.dtype)
    return s_class + counts.log()  # log 0 = -inf drops classes absent from the batch


def _target_classes_argmax(
    g_class: torch.Tensor, y: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """Class of ``argmax_j G[i, j]`` over batch columns j (first maximum, as torch.argmax)."""
    g = g_class[y][:, cols]
    return cols[g.argmax(dim=1)]


def _target_counts_topk(
    g_class: torch.Tensor, y: torch.Tensor, cols: torch.Tensor, k: int
) -> torch.Tensor:
    """``m[i, c]`` = how many of the top-k batch columns of ``G[i, :]`` have class c."""
    g = g_class[y][:, cols]
    picks = g.topk(min(k, g.shape[1]), dim=1).indices
    return F.one_hot(cols[picks], g_class.shape[0]).sum(dim=1).to(g_class.dtype)


def _target_counts_max_all(
    g_class: torch.Tensor, y: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """``m[i, c]`` = how many batch columns of class c attain ``max_j G[i, j]``."""
    g = g_class[y][:, cols]
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local loss of one layer and the B x K class scores of ``h``.

    ``h``: (B, ...) layer output of the inputs; ``t_class``: (K, ...) layer output of the class
    signals; ``g_class``: (K, K) similarity of the layer's *input* class signals; ``y``: (B,) labels.
    ``column_labels``: labels of the batch columns ``j`` (default ``y``; under data parallelism the
    whole global batch's, so a shard's rows see the columns a single process would).
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
    # log-probability of one batch column of class k: S_K[i, k] - log sum_k' n_k' exp S_K[i, k']
    log_p = s_class - _batch_class_logits(s_class, cols).logsumexp(dim=1, keepdim=True)
    if kind == "v14":
        target = _target_classes_argmax(g_class, y, cols)
        loss = -log_p.gather(1, target[:, None]).mean()
    else:
        counts = (
            _target_counts_topk(g_class, y, cols, topk)
            if kind == "topk"
            else _target_counts_max_all(g_class, y, cols)
        )
        loss = -(counts * log_p).sum(dim=1).mean()
    return loss, s_class.detach()


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(0.01)


def _signal_projection(num_classes: int, numel: int) -> nn.Sequential:
    """Official ``signal_modules_lp``: bias-free Linear → LayerNorm → ReLU."""
    return nn.Sequential(nn.Linear(num_classes, numel, bias=False), nn.LayerNorm(numel), nn.ReLU())


class _SigPropBase(nn.Module):
    """Shared machinery: ``blocks`` (local layers), ``signal`` (projection), ``output`` (classifier)."""

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        output: nn.Module,
        signal_shape: tuple[int, ...],
        num_classes: int,
        loss: str,
        topk: int,
    ) -> None:
        super().__init__()
        self.loss = check_choice("loss", loss, LOCAL_LOSSES)
        self.topk = check_int("topk", topk, 1)
        self.num_classes = num_classes
        self.signal_shape = tuple(signal_shape)
        self.blocks = nn.ModuleList(blocks)
        self.output = output
        self.signal = _signal_projection(num_classes, math.prod(self.signal_shape))
        # Nearest-class-signal hits of the last block during training (epoch metric, not state).
        self.register_buffer("signal_hits", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("signal_seen", torch.zeros((), dtype=torch.long), persistent=False)

    # -- parameter groups -----------------------------------------------------------------------
    def layer_parameters(self) -> list[nn.Parameter]:
        """Hidden blocks and output layer (trained at ``lr``)."""
        return [*self.blocks.parameters(), *self.output.parameters()]

    def signal_parameters(self) -> list[nn.Parameter]:
        """The label → signal projection (trained at ``signal_lr``)."""
        return list(self.signal.parameters())

    # -- input checks ---------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_labels(self, y: torch.Tensor, batch: int | None, name: str = "y") -> torch.Tensor:
        """``y`` as long class indices; ``batch=None`` accepts any non-empty 1-D length."""
        if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(
                f"{name} must be an integer tensor of class indices, got {_describe(y)}"
            )
        if batch is None:
            if y.dim() != 1 or y.numel() == 0:
                raise ValueError(f"{name} must be a non-empty 1-D tensor, got {tuple(y.shape)}")
            batch = y.shape[0]
        if y.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},) to match x, got {tuple(y.shape)}")
        if batch and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"{name} must hold class indices in [0, {self.num_classes - 1}], "
                f"got values in [{int(y.min())}, {int(y.max())}]"
            )
        return y.long()

    # -- inference (no label) -------------------------------------------------------------------
    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs ``h_1..h_L`` of the hidden blocks for ``x``."""
        h = self._check_input(x)
        out = []
        for block in self.blocks:
            h = block(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output-layer logits of ``x``; no label needed."""
        h = self._check_input(x)
        for block in self.blocks:
            h = block(h)
        return self.output(h)

    def class_signals(self) -> list[torch.Tensor]:
        """Class signals ``t_1..t_L`` (each K x layer output shape) of the current weights."""
        weight = self.signal[0].weight
        eye = torch.eye(self.num_classes, dtype=weight.dtype, device=weight.device)
        t = self.signal(eye).view(self.num_classes, *self.signal_shape)
        out = [t]
        for block in list(self.blocks)[1:]:
            t = block(t)
            out.append(t)
        return out

    @torch.no_grad()
    def predict_by_signal(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """B x K scores of ``x`` against each class signal at hidden ``layer`` (argmax = class)."""
        hs = self.hidden(x)
        check_int("layer", layer)
        if not -len(hs) <= layer < len(hs):
            raise ValueError(f"layer must be in [{-len(hs)}, {len(hs) - 1}], got {layer}")
        h, t = hs[layer], self.class_signals()[layer]
        if self.loss == "l2":
            return -torch.cdist(h.flatten(1), t.flatten(1)).pow(2) / h[0].numel()
        return signal_similarity(h, t)

    # -- training ---------------------------------------------------------------------------------
    def training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        layerwise_backward: bool = False,
        column_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sum_l L_l + CE(output(sg[h_L]), y)``; every block's input is detached.

        With ``layerwise_backward=True`` each local loss is back-propagated at once (graphs freed
        layer by layer, O(1-layer) activation memory); the returned tensor has the same value but
        carries only the output layer's graph, so ``loss.backward()`` completes the gradients.

        ``column_labels`` (default ``y``): the labels of the batch the similarity columns range
        over. Under data parallelism pass the global batch's labels (every rank's shard, in batch
        order): the losses are row means, so the ranks' averaged gradients then equal those of one
        process on the global batch.
        """
        h = self._check_input(x)
        y = self._check_labels(y, h.shape[0])
        if column_labels is not None:
            column_labels = self._check_labels(column_labels, None, "column_labels")
        eager = layerwise_backward and torch.is_grad_enabled()
        eye = torch.eye(self.num_classes, dtype=h.dtype, device=h.device)
        t = self.signal(eye).view(self.num_classes, *self.signal_shape)
        g_class = eye  # similarity of layer 1's input signals: one-hot labels
        total: torch.Tensor | None = None
        scores = None
        batch = h.shape[0]
        for index, block in enumerate(self.blocks):
            if index == 0:
                h = block(h.detach())
            else:  # inputs and class signals through the block as one batch: one GEMM each way
                both = block(torch.cat([h.detach(), t.detach()]))
                h, t = both[:batch], both[batch:]
            loss, scores = local_loss(self.loss, h, t, g_class, y, self.topk, column_labels)
            if eager:
                loss.backward()
                loss = loss.detach()
            total = loss if total is None else total + loss
            with torch.no_grad():
                g_class = signal_similarity(t.detach(), t.detach())
        if scores is not None and self.training:
            with torch.no_grad():
                self.signal_hits += (scores.argmax(dim=1) == y).sum()
                self.signal_seen += y.numel()
        ce = F.cross_entropy(self.output(h.detach()), y)
        return ce + total

    def reset_signal_accuracy(self) -> None:
        """Reset the running nearest-class-signal training accuracy."""
        self.signal_hits.zero_()
        self.signal_seen.zero_()

    def signal_accuracy(self) -> float:
        """Nearest-class-signal accuracy (last block) over training batches since the last reset."""
        seen = int(self.signal_seen)
        return float(self.signal_hits) / seen if seen else math.nan


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return type(value).__name__


class SigPropNet(_SigPropBase):
    """SigProp MLP: ``[Linear → act] x len(hidden_dims)`` local blocks, then ``Linear(output_dim)``.

    Accepts ``x`` of shape (B, input_dim) or (B, ...) with ``input_dim`` features per sample.
    """

    def __init__(
        self,
        input_dim: int = 784,
        hidden_dims: Sequence[int] = (512, 256),
        output_dim: int = 10,
        *,
        loss: str = "v14",
        topk: int = 6,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        check_int("input_dim", input_dim, 1)
        check_int("output_dim", output_dim, 2)
        check_choice("activation", activation, ACTIVATIONS)
        hidden_dims = _check_dims("hidden_dims", hidden_dims)
        blocks: list[nn.Module] = []
        fan_in = input_dim
        for width in hidden_dims:
            blocks.append(
                nn.Sequential(nn.Linear(fan_in, width, bias=bias), _activation(activation))
            )
            fan_in = width
        output = nn.Linear(fan_in, output_dim, bias=bias)
        super().__init__(blocks, output, (hidden_dims[0],), output_dim, loss, topk)
        self.input_dim = input_dim
        self.hidden_dims = hidden_dims

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor, got {_describe(x)}")
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.input_dim:
            raise ValueError(
                f"x must have shape (batch, {self.input_dim}) or (batch, ...) with "
                f"{self.input_dim} features per sample, got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.input_dim)

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, hidden_dims={self.hidden_dims}, "
            f"output_dim={self.num_classes}, loss={self.loss!r}"
        )


class SigPropCNN(_SigPropBase):
    """SigProp VGG-style CNN (the harness ``cnn``): each conv (+ReLU) is one local block.

    Blocks: for each entry ``c`` of ``channels``, ``convs_per_stage`` x [Conv3x3(c) → act], the last one
    followed by MaxPool2; then one local block per ``fc_dims`` entry (Flatten → Linear → act) and the
    output ``Linear(num_classes)``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (16, 32),
        num_classes: int = 10,
        *,
        convs_per_stage: int = 2,
        fc_dims: Sequence[int] = (128,),
        loss: str = "v14",
        topk: int = 6,
        activation: str = "relu",
    ) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in input_shape):
            raise ValueError(
                f"input_shape must be (channels, height, width) of positive ints, got {input_shape}"
            )
        check_int("num_classes", num_classes, 2)
        check_int("convs_per_stage", convs_per_stage, 1)
        check_choice("activation", activation, ACTIVATIONS)
        channels = _check_dims("channels", channels)
        fc_dims = _check_dims("fc_dims", fc_dims, allow_empty=True)
        c_in, height, width = input_shape
        scale = 2 ** len(channels)
        if height % scale or width % scale:
            raise ValueError(
                f"input_shape {input_shape}: height and width must be divisible by {scale} "
                f"(one 2x2 max-pool per entry of channels={channels})"
            )
        blocks: list[nn.Module] = []
        for c_out in channels:
            for conv in range(convs_per_stage):
                layers = [nn.Conv2d(c_in, c_out, 3, padding=1), _activation(activation)]
                if conv == convs_per_stage - 1:
                    layers.append(nn.MaxPool2d(2))
                blocks.append(nn.Sequential(*layers))
                c_in = c_out
        fan_in = c_in * (height // scale) * (width // scale)
        for dim in fc_dims:
            blocks.append(
                nn.Sequential(nn.Flatten(), nn.Linear(fan_in, dim), _activation(activation))
            )
            fan_in = dim
        output = nn.Sequential(nn.Flatten(), nn.Linear(fan_in, num_classes))
        first_shape = (
            (channels[0], height, width)
            if convs_per_stage > 1
            else (channels[0], height // 2, width // 2)
        )
        super().__init__(blocks, output, first_shape, num_classes, loss, topk)
        self.input_shape = input_shape
        self.channels = channels

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor, got {_describe(x)}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return x

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, channels={self.channels}, "
            f"num_classes={self.num_classes}, loss={self.loss!r}"
        )


def _check_dims(name: str, dims: Iterable[int], allow_empty: bool = False) -> list[int]:
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(dims).__name__}")
    dims = list(dims)
    if not dims and not allow_empty:
        raise ValueError(f"{name} must contain at least one positive int, got []")
    for d in dims:
        check_int(f"{name} entries", d, 1)
    return dims


# ---------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------
class SigPropAdam(torch.optim.Adam):
    """Adam that skips a step (with a warning) when any gradient is non-finite.

    Skipping the whole step keeps the parameters and both Adam moments finite; the number of skipped
    steps is counted in every param group's ``"nonfinite_skips"`` (saved in ``state_dict``).
    """

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("nonfinite_skips", 0)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group.setdefault("nonfinite_skips", 0)
        super().add_param_group(param_group)

    def _grads_finite(self) -> bool:
        return all_finite(grads_of(self))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._grads_finite():
            warnings.warn(
                "SigPropAdam: non-finite gradient, step skipped (parameters and state unchanged)",
                RuntimeWarning,
                stacklevel=2,
            )
            for group in self.param_groups:
                group["nonfinite_skips"] += 1
            return loss
        super().step()
        return loss


def create_sigprop_optimizer(
    model: _SigPropBase,
    lr: float = 1e-3,
    signal_lr: float = 1e-4,
    *,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> SigPropAdam:
    """One Adam over two groups: ``"layers"`` (blocks + output) at ``lr``, ``"signal"`` at ``signal_lr``."""
    if not isinstance(model, _SigPropBase):
        raise TypeError(f"model must be a SigPropNet or SigPropCNN, got {type(model).__name__}")
    check_positive("lr", lr)
    check_positive("signal_lr", signal_lr)
    check_nonnegative("weight_decay", weight_decay)
    groups = [
        {"params": model.layer_parameters(), "lr": lr, "name": "layers"},
        {"params": model.signal_parameters(), "lr": signal_lr, "name": "signal"},
    ]
    return SigPropAdam(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
