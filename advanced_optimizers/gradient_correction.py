r"""Gradient Correction (GC-W and GC-ODE): corrections of the weight gradients before a base step.

**Our own design**, after the abstract of Li, Ni, Li, Zhang, Gao, "GCGD" (arXiv 2203.08345), which
its authors withdrew (GC-W's structure wrong, GC-ODE unclear); no code exists. Kept from the
abstract: two plug-in modules that change the gradient itself, not the step size; GC-W from gradient
*prediction*, GC-ODE from the ODE view of training. Reasons, the family this design belongs to
(NAdam, MARS, Adan) and measurements: ``docs/algorithms/gradient_correction.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ._validation import check_int, check_nonnegative, check_positive, check_probability
from ._wrapper import WrappedOptimizer, build_base_optimizer, check_base_optimizer

__all__ = ["GradientCorrectionOptimizer", "create_gradient_correction_optimizer"]

C_RANGE = (-0.5, 1.0)  # the GC-ODE coefficient's range (absolute stability, see the class)
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_STATS = ("pred_error", "naive_error", "coef", "cosine", "count")


def _stats_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class GradientCorrectionOptimizer(WrappedOptimizer):
    r"""``g̃ = g + α·GC_W(g) + β·GC_ODE(g)`` fed to a base optimizer.

    Per parameter tensor, with :math:`g_t` its raw gradient and :math:`K` = ``history`` past ones:

    .. math::
        \begin{aligned}
        &\mathrm{GC}_W(g_t) = \hat g_{t+1} - g_t, \qquad
            \hat g_{t+1} = \textstyle\sum_{k=1}^{K} w_k\, g_{t+1-k}
            \quad\text{(the predicted next gradient)} \\
        &w = \big(A + \lambda\bar a I\big)^{-1}\big(b + \lambda\bar a\, e_1\big), \quad
            A \leftarrow \rho A + (1-\rho)\,h_t h_t^\top,\ b \leftarrow \rho b + (1-\rho)\,
            h_t^\top g_t,\ h_t = (g_{t-1},\dots,g_{t-K}) \\
        &\mathrm{GC}_{ODE}(g_t) = c\,\bar d_t, \qquad
            \bar d_t = \delta\,\bar d_{t-1} + (1-\delta)(g_t - g_{t-1}), \qquad
            c \in [-\tfrac12, 1]
        \end{aligned}

    GC-W is the least-squares predictor of the next gradient from the last :math:`K` (``A``, ``b``
    are exponential averages of the Gram entries, decay :math:`\rho` = ``predictor_decay``; the
    ridge term, :math:`\lambda` = ``ridge`` relative to the mean diagonal :math:`\bar a`, shrinks
    it toward "the next gradient equals this one", so :math:`\mathrm{GC}_W \equiv 0` at the
    start). GC-ODE is a two-step (Adams–Bashforth-type) integrator of the gradient flow,
    :math:`(1+c) g_t - c g_{t-1}` for :math:`\delta = 0`; :math:`c` starts at 0 and is learned by
    the hypergradient of the next loss, :math:`-\cos(g_t, \bar d_{t-1})`, with Adam at
    ``meta_lr``. The scheme is zero-stable for every :math:`c`; :math:`c` changes its *absolute*
    stability (on :math:`\lambda`-curvature with step :math:`\eta`, stable for
    :math:`\eta\lambda < 2/(1+2c)` when :math:`c \ge 0`), so the range caps how much a learned
    :math:`c > 0` shrinks the largest stable learning rate (to a third of Euler's at :math:`c = 1`).
    Under Adam, :math:`c = \beta_1` with :math:`\delta = 0` is NAdam's Nesterov look-ahead
    :math:`(1+c) m_t - c\, m_{t-1}`; :math:`\delta > 0` averages the differences as Adan does.

    All coefficients are one scalar per tensor and live on the parameters' device: a step adds no
    host synchronisation. Memory: ``history`` (plus one with :math:`\delta > 0`) gradient copies.
    ``p.grad`` holds :math:`\tilde g` after :meth:`step`; the history keeps the raw gradients.
    """

    algorithm = "gradient_correction"

    def __init__(
        self,
        base: torch.optim.Optimizer,
        *,
        use_gcw: bool = True,
        use_gcode: bool = True,
        gcw_strength: float = 0.1,
        gcode_strength: float = 1.0,
        history: int = 2,
        meta_lr: float = 1e-3,
        predictor_decay: float = 0.99,
        ridge: float = 1e-4,
        difference_decay: float = 0.0,
        device: torch.device | str | None = None,
        nonfinite: str = "skip",
    ) -> None:
        check_base_optimizer(base, type(self).__name__)
        for name, flag in (("use_gcw", use_gcw), ("use_gcode", use_gcode)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__} ({flag!r})")
        self.gcw_strength = check_nonnegative("gcw_strength", gcw_strength)
        self.gcode_strength = check_nonnegative("gcode_strength", gcode_strength)
        if not (use_gcw or use_gcode) and (self.gcw_strength or self.gcode_strength):
            raise ValueError(
                "use_gcw and use_gcode are both False, so gcw_strength and gcode_strength must be "
                f"0; got gcw_strength={gcw_strength}, gcode_strength={gcode_strength}"
            )
        self.use_gcw, self.use_gcode = use_gcw, use_gcode
        self.history = check_int("history", history, 2)
        self.meta_lr = check_positive("meta_lr", meta_lr)
        self.predictor_decay = check_probability("predictor_decay", predictor_decay, open_high=True)
        self.ridge = check_positive("ridge", ridge)
        self.difference_decay = check_probability(
            "difference_decay", difference_decay, open_high=True
        )
        self.device = None if device is None else torch.device(device)
        super().__init__(base, nonfinite=nonfinite)
        self._groups: list[dict[str, Any]] = []
        for group in self.param_groups:
            self._init_group(group)

    # -- construction -------------------------------------------------------------------------
    def _init_group(self, group: dict[str, Any]) -> None:
        params = group["params"]
        for p in params:
            if self.device is not None and p.device != self.device:
                raise ValueError(
                    f"device is {self.device} but a parameter of shape {tuple(p.shape)} is on "
                    f"{p.device}; move the model to {self.device} or pass device=None"
                )
        device = params[0].device if params else (self.device or torch.device("cpu"))
        n, k = len(params), self.history
        wide = _stats_dtype(device)  # the tiny per-tensor statistics in double precision
        coef = torch.zeros(n, device=device)  # c per tensor
        state = {
            "coef": coef,
            "count": [0] * n,  # gradients seen per tensor (host-side bookkeeping, never read back)
            "gram": torch.zeros(n, k + 1, k + 1, device=device, dtype=wide),  # latest first
            "A": torch.zeros(n, k, k, device=device, dtype=wide),
            "b": torch.zeros(n, k, device=device, dtype=wide),
            "ring": [torch.zeros(k, p.numel(), dtype=p.dtype, device=p.device) for p in params],
            "diff": [
                torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                if self.difference_decay > 0
                else None
                for p in params
            ],
            "stats": torch.zeros(len(_STATS), device=device, dtype=wide),
            "meta": {"m": torch.zeros_like(coef), "v": torch.zeros_like(coef), "t": 0},
        }
        self._groups.append(state)

    def _on_param_group_added(self, group: dict[str, Any]) -> None:
        self._init_group(group)

    # -- the step ------------------------------------------------------------------------------
    @torch.no_grad()
    def _before_step(self) -> None:
        """Correct every gradient in place (the base step then uses the corrected gradients)."""
        if not (self.use_gcw or self.use_gcode):
            return
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError(
                        "GradientCorrectionOptimizer does not support sparse gradients (a "
                        f"parameter of shape {tuple(p.shape)} has one); use dense gradients, e.g. "
                        "nn.Embedding(sparse=False)"
                    )
        for group, state in self._layout():
            self._correct_group(group, state)

    def _layout(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return list(zip(self.param_groups, self._groups, strict=True))

    def _correct_group(self, group: dict[str, Any], state: dict[str, Any]) -> bool:
        """Store this step's gradients, update the statistics, correct ``p.grad`` in place.

        Returns whether any tensor had a full history (its ``c`` then got a hypergradient).
        """
        params, k = group["params"], self.history
        active = [i for i, p in enumerate(params) if p.grad is not None]
        if not active:
            return False
        full = [i for i in active if state["count"][i] >= k]
        counts = [state["count"][i] for i in active]
        dots, by_slot = [], []
        for i in active:  # per tensor: one matrix-vector product, one dot, one copy
            grad, ring = params[i].grad.reshape(-1), state["ring"][i]
            work, past = (
                (grad.float(), ring.float()) if grad.dtype in _LOW_PRECISION else (grad, ring)
            )
            by_slot.append(torch.mv(past, work))  # read before g_t overwrites g_{t-K}'s slot
            dots.append(torch.dot(work, work))
            ring[state["count"][i] % k].copy_(grad)
            state["count"][i] += 1
        gram = state["gram"]
        rows = self._rows(active, len(params), gram.device)
        old = gram[rows].clone()
        lagged = self._lag_ordered(torch.stack(by_slot), counts).to(gram.dtype)
        gram[rows, 1:, 1:] = old[:, :-1, :-1]
        gram[rows, 0, 0] = torch.stack(dots).to(gram.dtype)
        gram[rows, 0, 1:] = lagged
        gram[rows, 1:, 0] = lagged
        if full:
            self._apply(params, state, full)
        return bool(full) and self.use_gcode

    def _rows(self, indices: list[int], n: int, device: torch.device) -> Any:
        """An index for ``indices`` of ``n`` rows: a slice when it is all of them (no copy)."""
        if len(indices) == n:
            return slice(None)
        return torch.tensor(indices, device=device)

    def _lag_ordered(self, by_slot: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Rows ``<g_t, slot s>`` reordered to ``<g_t, g_{t-lag}>``, lag = 1..K."""
        k = self.history
        orders = [[(count - lag) % k for lag in range(1, k + 1)] for count in counts]
        if all(order == orders[0] for order in orders):  # the usual case: one permutation
            return by_slot[:, orders[0]]
        index = torch.tensor(orders, device=by_slot.device)
        return by_slot.gather(1, index)

    def _past(self, state: dict[str, Any], i: int, lag: int) -> torch.Tensor:
        """``g_{t-lag}`` of tensor ``i`` (after this step's gradient was stored)."""
        return state["ring"][i][(state["count"][i] - 1 - lag) % self.history]

    def _apply(self, params: list[torch.Tensor], state: dict[str, Any], full: list[int]) -> None:
        """The corrections of the tensors with a full history, and their statistics."""
        index = self._rows(full, len(params), state["gram"].device)
        gram = state["gram"][index]  # (m, K+1, K+1): entry [a, b] = <g_{t-a}, g_{t-b}>
        g00, cross, past = gram[:, 0, 0], gram[:, 0, 1:], gram[:, 1:, 1:]
        A, b = state["A"][index], state["b"][index]
        w = self._predictor(A, b)  # fitted on steps up to t-1; predicts g_t from h_t, g_{t+1} next
        err = g00 - 2 * (w * cross).sum(1) + (w.unsqueeze(1) @ past @ w.unsqueeze(2)).flatten()
        naive = g00 - 2 * gram[:, 0, 1] + gram[:, 1, 1]
        cosine = gram[:, 0, 1] / (g00 * gram[:, 1, 1]).sqrt().clamp_min(1e-30)
        rho = self.predictor_decay
        state["A"][index] = rho * A + (1 - rho) * past
        state["b"][index] = rho * b + (1 - rho) * cross
        c = state["coef"].detach()[index].to(gram.dtype)
        alpha = self.gcw_strength if self.use_gcw else 0.0
        beta = self.gcode_strength if self.use_gcode else 0.0
        # g̃ = a_0 g_t + Σ_{j≥1} a_j g_{t-j} (+ βc·d̄ with averaged differences)
        mix = alpha * w
        mix[:, 0] += 1 - alpha
        if self.difference_decay == 0.0:
            mix[:, 0] += beta * c
            mix[:, 1] -= beta * c
        mix = mix.to(params[full[0]].dtype)
        bc = (beta * c).to(mix.dtype)
        for row, i in enumerate(full):
            self._mix_into(params[i].grad, state, i, mix[row], bc[row])
        self._hypergradient(state, index, gram, len(params))
        tiny = g00.clamp_min(1e-30)
        count = torch.full((), float(len(full)), device=gram.device, dtype=gram.dtype)
        summary = torch.stack(
            [(err / tiny).sum(), (naive / tiny).sum(), c.sum(), cosine.sum(), count]
        )
        state["stats"] += summary.to(state["stats"].dtype)

    def _predictor(self, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Ridge least squares toward ``e_1``: ``(A + λāI)^{-1}(b + λā e_1)``, batched."""
        k = A.shape[-1]
        scale = self.ridge * A.diagonal(dim1=1, dim2=2).mean(1) + 1e-30
        eye = torch.eye(k, device=A.device, dtype=A.dtype)
        rhs = b.clone()
        rhs[:, 0] += scale
        return torch.linalg.solve(A + scale[:, None, None] * eye, rhs)

    def _mix_into(
        self, grad: torch.Tensor, state: dict[str, Any], i: int, mix: torch.Tensor, bc: torch.Tensor
    ) -> None:
        """``grad ← Σ_j mix_j g_{t-j}`` in place, plus ``βc·d̄`` with averaged differences."""
        flat = grad.view(-1)
        diff = state["diff"][i]
        if diff is not None:  # d̄_t = δ d̄_{t-1} + (1-δ)(g_t - g_{t-1}), from the raw g_t
            delta = self.difference_decay
            diff.mul_(delta).add_(flat - self._past(state, i, 1), alpha=1 - delta)
        flat.mul_(mix[0])
        for lag in range(1, mix.shape[0]):
            flat.addcmul_(self._past(state, i, lag), mix[lag])
        if diff is not None:
            flat.addcmul_(diff, bc)

    def _hypergradient(self, state: dict[str, Any], index: Any, gram: torch.Tensor, n: int) -> None:
        """``∂L/∂c ≈ -cos(g_t, d_{t-1})``, ``d_{t-1} = g_{t-1} - g_{t-2}``, for the full rows.

        With ``difference_decay > 0`` the applied direction is the averaged ``d̄_{t-1}``, while this
        hypergradient still uses the raw last difference (read from the Gram matrix, no extra pass):
        an approximation, documented in ``docs/algorithms/gradient_correction.md``.
        """
        if not self.use_gcode:
            return
        dot = gram[:, 0, 1] - gram[:, 0, 2]
        d_sq = (gram[:, 1, 1] - 2 * gram[:, 1, 2] + gram[:, 2, 2]).clamp_min(0)
        cos = dot / (gram[:, 0, 0] * d_sq).sqrt().clamp_min(1e-30)
        coef, meta = state["coef"], state["meta"]
        grad = torch.zeros_like(coef)
        grad[index] = -cos.to(coef.dtype)
        mask = torch.zeros(n, dtype=torch.bool, device=coef.device)
        mask[index] = True
        # Adam on c (β = 0.9, 0.999; rows without a hypergradient this step stay as they are)
        meta["t"] += 1
        m = torch.where(mask, 0.9 * meta["m"] + 0.1 * grad, meta["m"])
        v = torch.where(mask, 0.999 * meta["v"] + 0.001 * grad * grad, meta["v"])
        step = (m / (1 - 0.9 ** meta["t"])) / ((v / (1 - 0.999 ** meta["t"])).sqrt() + 1e-8)
        meta["m"], meta["v"] = m, v
        coef.copy_(torch.where(mask, coef - self.meta_lr * step, coef).clamp(*C_RANGE))

    # -- diagnostics ---------------------------------------------------------------------------
    def diagnostics(self, reset: bool = True) -> dict[str, float]:
        """Means since the last reset (one host read): GC-W's squared relative prediction error
        ``‖ĝ_t − g_t‖² / ‖g_t‖²`` and the naive predictor's (``ĝ_t = g_{t−1}``; predicting zero
        scores exactly 1), the mean GC-ODE coefficient, the mean cosine of consecutive gradients,
        and how many tensor-steps they cover."""
        totals = torch.stack([s["stats"].cpu() for s in self._groups]).sum(0).tolist()
        err, naive, coef, cosine, count = totals
        mean = (lambda v: v / count) if count else (lambda v: float("nan"))
        if reset:
            for s in self._groups:
                s["stats"].zero_()
        return {
            "gcw_pred_error": mean(err),
            "gcw_naive_error": mean(naive),
            "gcode_coef": mean(coef),
            "grad_cosine": mean(cosine),
            "gc_tensor_steps": count,
        }

    def coefficients(self) -> list[torch.Tensor]:
        """Per group, ``(n_params, K+1)``: the predictor's weights ``w_1 … w_K`` and ``c``."""
        return [
            torch.cat([self._predictor(s["A"], s["b"]), s["coef"].detach().unsqueeze(1)], dim=1)
            for s in self._groups
        ]

    # -- checkpoints --------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "difference_decay": self.difference_decay,
            "groups": [
                {
                    "coef": s["coef"].detach().clone(),
                    "count": list(s["count"]),
                    "gram": s["gram"].clone(),
                    "A": s["A"].clone(),
                    "b": s["b"].clone(),
                    "ring": [r.clone() for r in s["ring"]],
                    "diff": [None if d is None else d.clone() for d in s["diff"]],
                    "stats": s["stats"].clone(),
                }
                for s in self._groups
            ],
            "meta_optimizer": {
                "state": [
                    {"m": s["meta"]["m"].clone(), "v": s["meta"]["v"].clone(), "t": s["meta"]["t"]}
                    for s in self._groups
                ]
            },
        }

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        if int(extra["history"]) != self.history:
            raise ValueError(
                f"state_dict was saved with history={extra['history']}, this optimizer has "
                f"history={self.history}"
            )
        if float(extra["difference_decay"]) != self.difference_decay:
            raise ValueError(
                f"state_dict was saved with difference_decay={extra['difference_decay']}, this "
                f"optimizer has difference_decay={self.difference_decay}"
            )
        for key in ("groups", "meta_optimizer"):
            if key not in extra:
                raise ValueError(f"GradientCorrectionOptimizer state lacks {key!r}")
        if len(extra["groups"]) != len(self._groups) or len(
            extra["meta_optimizer"].get("state", ())
        ) != len(self._groups):
            raise ValueError(
                f"state_dict holds {len(extra['groups'])} parameter groups of GC state, this "
                f"optimizer has {len(self._groups)}"
            )
        saved = [[tuple(r.shape) for r in g["ring"]] for g in extra["groups"]]
        mine = [[tuple(r.shape) for r in s["ring"]] for s in self._groups]
        if saved != mine:
            raise ValueError(
                f"state_dict was saved for other parameter shapes: gradient history {saved}, "
                f"this optimizer's {mine}"
            )
        for index, (group, state) in enumerate(zip(extra["groups"], self._groups, strict=True)):
            for key in ("coef", "gram", "A", "b", "stats"):
                value = group.get(key)
                if not isinstance(value, torch.Tensor) or value.shape != state[key].shape:
                    raise ValueError(f"GC state of group {index}: {key!r} is missing or misshapen")
            if len(group.get("count", ())) != len(state["count"]):
                raise ValueError(f"GC state of group {index}: 'count' has the wrong length")

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        with torch.no_grad():
            for state, saved in zip(self._groups, extra["groups"], strict=True):
                state["coef"].copy_(saved["coef"])
                state["count"] = [int(c) for c in saved["count"]]
                for key in ("gram", "A", "b", "stats"):
                    state[key].copy_(saved[key])
                for mine, theirs in zip(state["ring"], saved["ring"], strict=True):
                    mine.copy_(theirs)
                for mine, theirs in zip(state["diff"], saved["diff"], strict=True):
                    if mine is not None:
                        mine.copy_(theirs)
            for state, meta in zip(self._groups, extra["meta_optimizer"]["state"], strict=True):
                state["meta"]["m"].copy_(meta["m"])
                state["meta"]["v"].copy_(meta["v"])
                state["meta"]["t"] = int(meta["t"])

    def _repr_options(self) -> dict[str, Any]:
        return {
            "use_gcw": self.use_gcw,
            "use_gcode": self.use_gcode,
            "gcw_strength": self.gcw_strength,
            "gcode_strength": self.gcode_strength,
            "history": self.history,
            "meta_lr": self.meta_lr,
            "difference_decay": self.difference_decay,
        }


def create_gradient_correction_optimizer(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    lr: float = 1e-3,
    use_gcw: bool = True,
    use_gcode: bool = True,
    device: torch.device | str | None = None,
    gcw_strength: float = 0.1,
    gcode_strength: float = 1.0,
    history: int = 2,
    meta_lr: float = 1e-3,
    base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    nonfinite: str = "skip",
    **base_kwargs: Any,
) -> GradientCorrectionOptimizer:
    """``GradientCorrectionOptimizer(base_optimizer(params, lr=lr, **base_kwargs), ...)``.

    ``base_kwargs`` may also hold ``predictor_decay``, ``ridge`` and ``difference_decay``, which go
    to :class:`GradientCorrectionOptimizer`.
    """
    check_positive("lr", lr)
    gc_options = {
        key: base_kwargs.pop(key)
        for key in ("predictor_decay", "ridge", "difference_decay")
        if key in base_kwargs
    }
    base = build_base_optimizer(
        params, base_optimizer, {"lr": lr, **base_kwargs}, "GradientCorrectionOptimizer"
    )
    return GradientCorrectionOptimizer(
        base,
        use_gcw=use_gcw,
        use_gcode=use_gcode,
        gcw_strength=gcw_strength,
        gcode_strength=gcode_strength,
        history=history,
        meta_lr=meta_lr,
        device=device,
        nonfinite=nonfinite,
        **gc_options,
    )
