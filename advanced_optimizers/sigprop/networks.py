r"""SigProp networks: the label becomes a signal at the front and travels through the same layers.

.. math::
    \begin{aligned}
    &t_1 = \mathrm{ReLU}(\mathrm{LayerNorm}(W_s\,\mathrm{onehot}(y))), \qquad h_1 = g_1(x) \\
    &h_l = g_l(\mathrm{sg}[\tilde h_{l-1}]), \qquad t_l = g_l(\mathrm{sg}[\tilde t_{l-1}])
        \qquad (l = 2..L), \qquad \tilde h_l = p_l(h_l),\ \tilde t_l = p_l(t_l) \\
    &\mathcal{L} = \textstyle\sum_l L_l(h_l, t_l;\, \tilde t_{l-1})
        + \mathrm{CE}(f(\mathrm{sg}[\tilde h_L]), y)
    \end{aligned}

(:math:`\mathrm{sg}` = stop-gradient; :math:`L_l` one of :mod:`.losses`; :math:`f` the output
layer; :math:`p_l` a fixed, parameter-free stage after block :math:`l`: a CNN's max-pool when the
loss is taken before pooling, else the identity). No gradient crosses a layer, so one backward of
:math:`\mathcal{L}` gives exactly the per-layer local gradients. Inference needs no label:
``forward(x)`` gives the output layer's logits. Kohan, Rietman, Siegelmann (IEEE TNNLS 2023);
official code amassivek/signalpropagation. Design choices where we differ or the sources are
silent: ``docs/algorithms/sigprop.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._distributed import is_distributed
from .._validation import check_choice, check_index_tensor, check_int
from .blocks import ACTIVATIONS as ACTIVATIONS
from .blocks import NORMS as NORMS
from .blocks import _activation as _activation
from .blocks import _check_dims, _check_norm, _signal_projection, mlp_blocks, vgg_blocks
from .blocks import _norm as _norm
from .local_grads import defer_gradients
from .losses import LOCAL_LOSSES, column_log_counts, local_loss, signal_similarity

__all__ = ["ACTIVATIONS", "NORMS", "SigPropBase", "SigPropCNN", "SigPropNet"]
# The names imported above as ``name as name`` are re-exported: this module held them before the
# blocks moved to :mod:`.blocks`.


class SigPropBase(nn.Module):
    """Shared machinery: ``blocks`` (local layers), ``signal`` (projection), ``output`` (classifier).

    ``fixed``: per block, a parameter-free stage applied after its local loss (``None``: identity),
    the official ``Fixed`` propagators (a CNN's max-pool with ``loss_before_pool=True``).
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        output: nn.Module,
        signal_shape: tuple[int, ...],
        num_classes: int,
        loss: str,
        topk: int,
        layerwise_backward: bool = True,
        fixed: Sequence[nn.Module | None] | None = None,
    ) -> None:
        super().__init__()
        self.loss = check_choice("loss", loss, LOCAL_LOSSES)
        self.layerwise_backward = check_choice(
            "layerwise_backward", layerwise_backward, (True, False)
        )
        self.topk = check_int("topk", topk, 1)
        self.num_classes = num_classes
        self.signal_shape = tuple(signal_shape)
        self.blocks = nn.ModuleList(blocks)
        fixed = list(fixed) if fixed is not None else [None] * len(self.blocks)
        if len(fixed) != len(self.blocks):
            raise ValueError(f"fixed must have one entry per block, got {len(fixed)}")
        self.fixed = nn.ModuleList(nn.Identity() if f is None else f for f in fixed)
        self._has_fixed = [f is not None for f in fixed]
        # Measured on CPU: a Linear block runs fastest on inputs and class signals as one batch
        # (one GEMM instead of a second, K-row one); a conv block on two separate batches.
        self._joint_batch = [
            not any(isinstance(m, nn.Conv2d) for m in block.modules()) for block in self.blocks
        ]
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
        check_index_tensor(name, y, self.num_classes, what="class indices")
        return y.long()

    @staticmethod
    def _check_batch_size(x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one sample, got an empty batch")

    # -- inference (no label) -------------------------------------------------------------------
    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs ``h_1..h_L`` of the hidden blocks for ``x``."""
        h = self._check_input(x)
        out = []
        for block, fixed in zip(self.blocks, self.fixed, strict=True):
            h = block(h)
            out.append(h)
            h = fixed(h)
        return out

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        column_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Output-layer logits of ``x`` (no label needed); with labels ``y``, the training loss.

        ``model(x, y)`` is :meth:`training_loss` called through the module, which is how to train
        under ``DistributedDataParallel`` (its gradient synchronisation is set up by the wrapper's
        forward): ``loss = ddp_model(x, y); loss.backward()``.
        """
        if y is not None:
            return self._training_loss(x, y, self.layerwise_backward, column_labels)
        h = self._check_input(x)
        for block, fixed in zip(self.blocks, self.fixed, strict=True):
            h = fixed(block(h))
        return self.output(h)

    def class_signals(self) -> list[torch.Tensor]:
        """Class signals ``t_1..t_L`` (each K x block output shape, where the loss is taken)."""
        weight = self.signal[0].weight
        t = self.signal(self._eye(weight)).view(self.num_classes, *self.signal_shape)
        out = [t]
        for index, block in enumerate(self.blocks):
            if index > 0:
                t = block(t)
                out.append(t)
            t = self.fixed[index](t)
        return out

    def _eye(self, like: torch.Tensor) -> torch.Tensor:
        """The K one-hot labels (cached per dtype and device: built once, not every step)."""
        key = (like.dtype, like.device)
        cache = self.__dict__.setdefault("_eye_cache", {})
        eye = cache.get(key)
        if eye is None:
            eye = cache[key] = torch.eye(self.num_classes, dtype=like.dtype, device=like.device)
        return eye

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
        layerwise_backward: bool | None = None,
        column_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sum_l L_l + CE(output(sg[h_L]), y)``; every block's input is detached.

        ``layerwise_backward`` (default: the model's ``layerwise_backward``, True) back-propagates
        each local loss as soon as it is computed and frees that layer's graph (activation memory
        independent of depth); the gradients reach ``.grad`` in the caller's ``loss.backward()``
        (:mod:`.local_grads`), so loss scaling, ``zero_grad`` order and DDP work as usual.
        ``False`` keeps every graph until the one backward (same gradients).

        ``column_labels`` (default ``y``): the labels of the batch the similarity columns range
        over. Under data parallelism pass the global batch's labels (every rank's shard, in batch
        order): the losses are row means, so the ranks' averaged gradients then equal those of one
        process on the global batch. Under ``torch.distributed`` train through the module,
        ``model(x, y)``, so a ``DistributedDataParallel`` wrapper sees the forward.
        """
        if is_distributed():
            raise RuntimeError(
                "SigProp under torch.distributed: call the model with labels, loss = model(x, y) "
                "(through its DistributedDataParallel wrapper), not model.training_loss(x, y), "
                "which bypasses the wrapper's gradient synchronisation"
            )
        if layerwise_backward is None:
            layerwise_backward = self.layerwise_backward
        return self._training_loss(x, y, layerwise_backward, column_labels)

    def _training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        layerwise_backward: bool,
        column_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        h = self._check_input(x)
        y = self._check_labels(y, h.shape[0])
        if column_labels is not None:
            column_labels = self._check_labels(column_labels, None, "column_labels")
        eager = layerwise_backward and torch.is_grad_enabled()
        cols = y if column_labels is None else column_labels
        eye = self._eye(h)
        t = self.signal(eye).view(self.num_classes, *self.signal_shape)
        g_class = eye  # similarity of layer 1's input signals: one-hot labels
        log_counts = column_log_counts(cols, self.num_classes, torch.float32)  # once per batch
        total: torch.Tensor | None = None
        scores = None
        batch = h.shape[0]
        last = len(self.blocks) - 1
        deferred_params: list[torch.Tensor] = []
        deferred_grads: list[torch.Tensor | None] = []
        for index, block in enumerate(self.blocks):
            if index == 0:
                h = block(h.detach())
            elif self._joint_batch[index]:  # inputs and class signals as one batch: one GEMM
                h, t = block(torch.cat([h.detach(), t.detach()])).split([batch, self.num_classes])
            else:  # a conv block: two calls, sparing the copy of the maps into one batch
                h, t = block(h.detach()), block(t.detach())
            loss, scores = local_loss(
                self.loss, h, t, g_class, y, self.topk, column_labels, log_counts=log_counts
            )
            if eager:
                params = self._local_parameters(index)
                if params and loss.requires_grad:
                    deferred_grads += torch.autograd.grad(loss, params, allow_unused=True)
                    deferred_params += params
                loss = loss.detach()
            total = loss if total is None else total + loss
            if self._has_fixed[index]:  # official Fixed propagator: after the loss, no gradient
                with torch.no_grad():
                    h, t = self.fixed[index](h.detach()), self.fixed[index](t.detach())
            if index < last:
                with torch.no_grad():
                    g_class = signal_similarity(t.detach(), t.detach())
        if scores is not None and self.training:
            with torch.no_grad():
                self.signal_hits += (scores.argmax(dim=1) == y).sum()
                self.signal_seen += y.numel()
        if eager:
            total = defer_gradients(total, deferred_params, deferred_grads)
        ce = F.cross_entropy(self.output(h.detach()), y)
        return ce + total

    def _local_parameters(self, index: int) -> list[torch.Tensor]:
        """Trainable parameters of block ``index``'s local loss (block 0: and the projection)."""
        owners = [self.blocks[index], self.signal] if index == 0 else [self.blocks[index]]
        return [p for m in owners for p in m.parameters() if p.requires_grad]

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


class SigPropNet(SigPropBase):
    """SigProp MLP: ``[Linear → norm → act] x len(hidden_dims)`` local blocks, then ``Linear(output_dim)``.

    Accepts ``x`` of shape (B, input_dim) or (B, ...) with ``input_dim`` features per sample.
    ``norm``: ``"none"`` (default), ``"layer"`` or ``"instance"`` (both LayerNorm on a vector);
    BatchNorm is refused (its batch statistics would mix the class signals with the inputs).
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
        layerwise_backward: bool = True,
        norm: str = "none",
    ) -> None:
        check_int("input_dim", input_dim, 1)
        check_int("output_dim", output_dim, 2)
        check_choice("activation", activation, ACTIVATIONS)
        norm = _check_norm(norm)
        hidden_dims = _check_dims("hidden_dims", hidden_dims)
        blocks, fan_in = mlp_blocks(input_dim, hidden_dims, norm, activation, bias)
        output = nn.Linear(fan_in, output_dim, bias=bias)
        super().__init__(
            blocks, output, (hidden_dims[0],), output_dim, loss, topk, layerwise_backward
        )
        self.input_dim = input_dim
        self.hidden_dims = hidden_dims
        self.norm = norm

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor, got {_describe(x)}")
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.input_dim:
            raise ValueError(
                f"x must have shape (batch, {self.input_dim}) or (batch, ...) with "
                f"{self.input_dim} features per sample, got {tuple(x.shape)}"
            )
        self._check_batch_size(x)
        return x.reshape(x.shape[0], self.input_dim)

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, hidden_dims={self.hidden_dims}, "
            f"output_dim={self.num_classes}, loss={self.loss!r}, norm={self.norm!r}"
        )


class SigPropCNN(SigPropBase):
    """SigProp VGG-style CNN (the harness ``cnn``): each conv (+norm, act) is one local block.

    Blocks: for each entry ``c`` of ``channels``, ``convs_per_stage`` x [Conv3x3(c) → norm → act],
    the last one followed by MaxPool2; then one local block per ``fc_dims`` entry
    (Flatten → Linear → norm → act) and the output ``Linear(num_classes)``.
    ``loss_before_pool=True`` (default, the official VGG): the max-pool is a separate fixed stage,
    so the block's local loss is taken on the conv output before pooling; ``False``: the pool ends
    the block and the loss is taken after it. ``norm``: ``"none"`` (default), ``"layer"``
    (``GroupNorm(1, C)`` on conv maps, LayerNorm on vectors) or ``"instance"``
    (``InstanceNorm2d(affine=True)``; LayerNorm on vectors); BatchNorm is refused.
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
        layerwise_backward: bool = True,
        norm: str = "none",
        loss_before_pool: bool = True,
    ) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in input_shape):
            raise ValueError(
                f"input_shape must be (channels, height, width) of positive ints, got {input_shape}"
            )
        check_int("num_classes", num_classes, 2)
        check_int("convs_per_stage", convs_per_stage, 1)
        check_choice("activation", activation, ACTIVATIONS)
        norm = _check_norm(norm)
        check_choice("loss_before_pool", loss_before_pool, (True, False))
        channels = _check_dims("channels", channels)
        fc_dims = _check_dims("fc_dims", fc_dims, allow_empty=True)
        _, height, width = input_shape
        scale = 2 ** len(channels)
        if height % scale or width % scale:
            raise ValueError(
                f"input_shape {input_shape}: height and width must be divisible by {scale} "
                f"(one 2x2 max-pool per entry of channels={channels})"
            )
        blocks, fixed, fan_in = vgg_blocks(
            input_shape, channels, convs_per_stage, fc_dims, norm, activation, loss_before_pool
        )
        output = nn.Sequential(nn.Flatten(), nn.Linear(fan_in, num_classes))
        first_shape = (
            (channels[0], height, width)
            if convs_per_stage > 1 or loss_before_pool
            else (channels[0], height // 2, width // 2)
        )
        super().__init__(
            blocks, output, first_shape, num_classes, loss, topk, layerwise_backward, fixed
        )
        self.input_shape = input_shape
        self.channels = channels
        self.norm = norm
        self.loss_before_pool = loss_before_pool

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor, got {_describe(x)}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        self._check_batch_size(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, channels={self.channels}, "
            f"num_classes={self.num_classes}, loss={self.loss!r}, norm={self.norm!r}, "
            f"loss_before_pool={self.loss_before_pool}"
        )
