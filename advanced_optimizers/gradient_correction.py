"""Gradient Correction (GC-W and GC-ODE): learned, online corrections of the weight gradients.

**This is our own design**, inspired by the abstract of Li, Ni, Li, Zhang, Gao, "GCGD" (arXiv
2203.08345). The authors *withdrew* that paper (its GC-W structure is wrong, GC-ODE unclear) and no
code exists. What we keep from the abstract: two plug-in modules that change the gradient itself, not
the step size; GC-W is based on gradient *prediction* (a learned module predicting a gradient
offset); GC-ODE comes from the ODE view of training. Nothing below reproduces the paper's equations.

Notation (per parameter tensor ``i``; every coefficient below is one scalar per tensor): ``g_t`` the
raw mini-batch gradient at step ``t``; the last ``K+1`` raw gradients ``g_t … g_{t−K}`` are kept
(``K = history``, default 2); ``G[a, b] = <g_{t−a}, g_{t−b}>`` their Gram matrix. The update fed to
the base optimizer is ::

    g̃_t = g_t + α · GC_W(g_t) + β · GC_ODE(g_t)          (α = gcw_strength, β = gcode_strength)

GC-W: a learned next-gradient predictor
---------------------------------------
``p_{t+1} = Σ_{k=1..K} w_k g_{t+1−k}`` predicts the *next* observed gradient from the recent ones
(a linear, attention-like mixing of the history with learned per-tensor weights ``w``). Its offset
``GC_W(g_t) = p_{t+1} − g_t`` moves the update toward the gradient expected at the next step. It is
trained online on a measurable target: when ``g_t`` arrives, the prediction made one step earlier has
error ``e_t = g_t − Σ_k w_k g_{t−k}`` and the module minimises the scale-free loss
``ℓ_W = ½ ||e_t||² / ||g_t||²``, whose gradient needs only the Gram matrix::

    ∂ℓ_W/∂w_k = −(G[0, k] − Σ_j w_j G[j, k]) / G[0, 0].

``w`` starts at ``(1, 0, …, 0)`` (predict "the next gradient equals this one"), so ``GC_W ≡ 0`` at
initialisation. The relative error ``||e_t||²/||g_t||²`` and that of the naive predictor
``(w = e_1)`` are logged (``diagnostics()``), so one can see whether the predictor beats "no change".
For mini-batch gradients (a slowly moving mean plus independent noise) the best linear predictor
shrinks and averages the history rather than extrapolating; on smooth, predictable gradient
sequences (e.g. a quadratic) it tracks them closely.

GC-ODE: a learned two-step (Adams–Bashforth-type) integrator of the gradient flow
---------------------------------------------------------------------------------
Training integrates ``θ' = −∇L(θ)``; the base optimizer's step is an explicit Euler step with
``f_t = g_t``. A consistent explicit two-step method uses ``(1 + c) f_t − c f_{t−1}`` (``c = ½`` is
Adams–Bashforth 2), i.e. the correction ``GC_ODE(g_t) = c · (g_t − g_{t−1})``. Instead of fixing
``c`` (which presumes a smooth trajectory, false under mini-batch noise) it is learned per tensor by
the hypergradient of the next training loss: the update at ``t−1`` moved ``θ`` by ``−η β c d_{t−1}``
(``d_{t−1} = g_{t−1} − g_{t−2}``), so ``∂L(θ_t)/∂c ≈ −η β <g_t, d_{t−1}>``. **[design]** We drop the
positive factor ``η β`` and use the cosine ``−<g_t, d_{t−1}> / (||g_t|| ||d_{t−1}||)`` (scale-free;
it ignores the base optimizer's diagonal preconditioner, which does not change the sign for SGD and
is a first-order approximation for Adam). ``c`` starts at 0 (plain Euler, ``GC_ODE ≡ 0``) and is
clipped to ``[−1, 1]`` (**[design]**: keeps the two-step recursion zero-stable; AB2 lies inside).

Both modules' coefficients (``w`` and ``c``) are trained by their own ``torch.optim.Adam``
(``meta_lr``), whose state is part of :meth:`GradientCorrectionOptimizer.state_dict`. Both
corrections lie in the span of the stored gradients, so ``g̃_t = Σ_k a_k g_{t−k}`` with
``a_0 = 1 + α(w_1 − 1) + βc``, ``a_1 = α w_2 − β c``, ``a_k = α w_{k+1}`` (``k < K``, and
``a_K = 0``). **[design] cost**: per tensor one copy into a ring buffer of the last ``K+1`` raw
gradients, one matrix-vector product for the ``K+1`` new Gram entries ``<g_t, g_{t−k}>`` (older
entries are cached, shifted by one lag each step) and ``K`` in-place axpys; the per-tensor scalar
algebra runs on Python floats. Per-tensor scalar coefficients keep the overhead at a few memory passes
over the gradients; a per-element network would cost more than the step it corrects.

What was measured (``benchmarks/gradient_correction.py``; numbers in
``docs/algorithms/gradient_correction.md``): on MNIST with Adam the learned predictor beats the naive
one (relative error ~1.3–1.4 vs ~2.8–3.6 on the MLP: mini-batch gradients are mostly unpredictable
noise; consecutive ones are even negatively correlated; the predictor learns ``w_1 < 1`` and a small
negative ``w_2``), ``c`` settles slightly positive (AB2-like,
+0.05 to +0.2), and neither module shortens training: the paper's ~20 % claim did not reproduce.

Other design choices
--------------------
* Warm-up: a tensor's corrections (and the modules' training) start once ``K+1`` gradients are stored;
  before that the update is the raw gradient.
* ``g`` is corrected **in place** (``p.grad`` holds ``g̃`` after :meth:`step`); the history keeps the
  raw gradients.
* Non-finite gradients: if any gradient is NaN/Inf the whole step is skipped with a warning — neither
  the parameters, the base optimizer, the history nor the modules change (``skipped_steps`` counts).
* Parameters whose ``grad`` is ``None`` are skipped: their history, counter and coefficients stay.
* Memory: ``K+1`` extra copies of the parameters (the gradient history).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ._validation import check_int, check_nonnegative, check_positive
from ._wrapper import WrappedOptimizer, build_base_optimizer, check_base_optimizer

__all__ = ["GradientCorrectionOptimizer", "create_gradient_correction_optimizer"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class GradientCorrectionOptimizer(WrappedOptimizer):
    """``g̃ = g + α·GC_W(g) + β·GC_ODE(g)`` fed to a base optimizer; see the module docstring.

    ``param_groups`` and ``state`` *are* the base optimizer's (LR schedulers drive it directly).
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
        self.use_gcw = use_gcw
        self.use_gcode = use_gcode
        self.history = check_int("history", history, 2)
        self.meta_lr = check_positive("meta_lr", meta_lr)
        self.device = None if device is None else torch.device(device)

        super().__init__(base, nonfinite=nonfinite)
        self._coefs: list[torch.Tensor] = []  # per group: (n_params, K+1) = [w_1..w_K, c]
        self._counts: list[list[int]] = []  # per group, per param: gradients stored so far
        self._grams: list[list[list[list[float]]]] = []  # per param: lag-ordered Gram (cached)
        self._buffers: list[list[torch.Tensor]] = []  # per group, per param: (K+1, numel) ring
        self._stats = [0.0, 0.0, 0.0, 0.0]  # sums: err, naive err, c, n
        self.meta_optimizer: torch.optim.Adam | None = None
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
        k = self.history
        coef = torch.zeros(len(params), k + 1, device=device)
        coef[:, 0] = 1.0  # w = e_1 (predict "no change"), c = 0
        coef.requires_grad_(True)
        self._coefs.append(coef)
        self._counts.append([0] * len(params))
        self._grams.append([[[0.0] * (k + 1) for _ in range(k + 1)] for _ in params])
        self._buffers.append(
            [torch.zeros(k + 1, p.numel(), dtype=p.dtype, device=p.device) for p in params]
        )
        if self.meta_optimizer is None:
            self.meta_optimizer = torch.optim.Adam([coef], lr=self.meta_lr)
        else:
            self.meta_optimizer.add_param_group({"params": [coef]})

    def _on_param_group_added(self, group: dict[str, Any]) -> None:
        self._init_group(group)

    # -- the step ------------------------------------------------------------------------------
    @torch.no_grad()
    def _before_step(self) -> None:
        """Correct every gradient in place (the base step then uses the corrected gradients)."""
        if not (self.use_gcw or self.use_gcode):
            return
        self._check_dense()
        self._frozen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        meta_step = False
        for index, group in enumerate(self.param_groups):
            meta_step |= self._correct_group(index, group)
        if meta_step:
            self.meta_optimizer.step()
            self._project()
        self.meta_optimizer.zero_grad(set_to_none=True)

    def _check_dense(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError(
                        "GradientCorrectionOptimizer does not support sparse gradients (a parameter "
                        f"of shape {tuple(p.shape)} has one); use dense gradients, e.g. "
                        "nn.Embedding(sparse=False)"
                    )

    def _correct_group(self, index: int, group: dict[str, Any]) -> bool:
        """Store this step's gradients, set the modules' gradients, correct ``p.grad`` in place.

        Returns whether any tensor of the group had a full history (so its coefficients got a
        gradient). Per parameter the tensor work is one copy into the ring buffer, one
        matrix-vector product (the ``K+1`` new Gram entries ``<g_t, g_{t−k}>``; older entries are
        cached) and up to ``K`` in-place axpys; the per-tensor scalar math runs on Python floats,
        which is cheaper than launching dozens of tiny tensor ops.
        """
        params, buffers, grams = group["params"], self._buffers[index], self._grams[index]
        active = [i for i, p in enumerate(params) if p.grad is not None]
        if not active:
            return False
        k1 = self.history + 1
        counts = self._counts[index]
        coef = self._coefs[index]
        coefs = coef.detach().tolist()
        grads: list[list[float]] = [[0.0] * k1 for _ in params]
        learned = [False] * len(params)
        for i in active:
            grad, buf, count = params[i].grad, buffers[i], int(counts[i])
            lag_slot = [(count - k) % k1 for k in range(k1)]
            buf[lag_slot[0]].copy_(grad.reshape(-1))
            work = buf.float() if buf.dtype in _LOW_PRECISION else buf
            dots = torch.mv(work, work[lag_slot[0]]).tolist()
            gram = _shift_gram(grams[i], [dots[s] for s in lag_slot])
            grams[i] = gram
            counts[i] = count + 1
            if count + 1 < k1:
                continue
            _apply_mix(grad, buf, self._mixing(coefs[i]), lag_slot)
            grads[i] = self._meta_gradient(coefs[i], gram)
            learned[i] = True
        if not any(learned):
            return False
        coef.grad = torch.tensor(grads, dtype=coef.dtype, device=coef.device)
        if not all(learned):  # Adam's momentum would move rows that got no signal: restore them
            frozen = torch.tensor([i for i, ok in enumerate(learned) if not ok], device=coef.device)
            self._frozen.append((coef, frozen, coef.detach()[frozen].clone()))
        return True

    def _mixing(self, coef: list[float]) -> list[float]:
        """``a`` with ``g̃ = Σ_k a_k g_{t−k}`` (lag order) from ``coef = [w_1 … w_K, c]``."""
        k = self.history
        alpha = self.gcw_strength if self.use_gcw else 0.0
        beta = self.gcode_strength if self.use_gcode else 0.0
        w, c = coef[:k], coef[k]
        mix = [alpha * wk for wk in w] + [0.0]
        mix[0] += 1.0 - alpha + beta * c
        mix[1] -= beta * c
        return mix

    def _meta_gradient(self, coef: list[float], gram: list[list[float]]) -> list[float]:
        """Gradients of the GC-W prediction loss (``w``) and the GC-ODE hypergradient (``c``).

        Also accumulates the logged relative prediction errors and the mean ``c``.
        """
        k = self.history
        w, c = coef[:k], coef[k]
        g00 = gram[0][0]
        if not g00 > 0.0:  # a zero gradient carries no signal
            return [0.0] * (k + 1)
        cross = gram[0][1:]
        pw = [sum(w[j] * gram[j + 1][m + 1] for j in range(k)) for m in range(k)]
        grad_w = [-(cross[m] - pw[m]) / g00 for m in range(k)] if self.use_gcw else [0.0] * k
        err = (
            g00
            - 2 * sum(wm * cm for wm, cm in zip(w, cross, strict=True))
            + sum(wm * pm for wm, pm in zip(w, pw, strict=True))
        ) / g00
        naive = (g00 - 2 * gram[0][1] + gram[1][1]) / g00
        d_sq = max(gram[1][1] - 2 * gram[1][2] + gram[2][2], 0.0)
        grad_c = 0.0
        if self.use_gcode and d_sq > 0.0:
            grad_c = -(gram[0][1] - gram[0][2]) / math.sqrt(g00 * d_sq)
        self._stats[0] += err
        self._stats[1] += naive
        self._stats[2] += c
        self._stats[3] += 1.0
        return [*grad_w, grad_c]

    def _project(self) -> None:
        """Clip ``c`` to [−1, 1]; restore the rows of tensors that gave no signal this step."""
        k = self.history
        for coef in self._coefs:
            coef.data[:, k].clamp_(-1.0, 1.0)
        for coef, rows, values in self._frozen:
            coef.data[rows] = values
        self._frozen = []

    # -- diagnostics ---------------------------------------------------------------------------
    def diagnostics(self, reset: bool = True) -> dict[str, float]:
        """Means since the last reset: GC-W relative prediction error (and the naive predictor's),
        mean ODE coefficient ``c``, and how many tensor-steps they cover."""
        err, naive, c, n = self._stats
        out = {
            "gcw_pred_error": err / n if n else math.nan,
            "gcw_naive_error": naive / n if n else math.nan,
            "gcode_coef": c / n if n else math.nan,
            "gc_tensor_steps": n,
        }
        if reset:
            self._stats = [0.0, 0.0, 0.0, 0.0]
        return out

    def coefficients(self) -> list[torch.Tensor]:
        """Per group, a copy of the ``(n_params, K+1)`` coefficients ``[w_1 … w_K, c]``."""
        return [c.detach().clone() for c in self._coefs]

    # -- checkpoints --------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "coefs": [c.detach().clone() for c in self._coefs],
            "counts": [list(c) for c in self._counts],
            "grams": _copy_nested(self._grams),
            "buffers": [[b.clone() for b in bufs] for bufs in self._buffers],
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "stats": list(self._stats),
            "history": self.history,
        }

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        if int(extra["history"]) != self.history:
            raise ValueError(
                f"state_dict was saved with history={extra['history']}, this optimizer has "
                f"history={self.history}"
            )
        shapes = [tuple(c.shape) for c in extra["coefs"]]
        if shapes != [tuple(c.shape) for c in self._coefs]:
            raise ValueError(
                f"state_dict holds coefficient shapes {shapes}, expected "
                f"{[tuple(c.shape) for c in self._coefs]}"
            )
        saved = [tuple(b.shape) for bufs in extra["buffers"] for b in bufs]
        mine = [tuple(b.shape) for bufs in self._buffers for b in bufs]
        if saved != mine:
            raise ValueError(
                f"state_dict was saved for other parameter shapes: gradient history {saved}, "
                f"this optimizer's {mine}"
            )

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        with torch.no_grad():
            for mine, saved in zip(self._coefs, extra["coefs"], strict=True):
                mine.copy_(saved)
            for mine, saved in zip(self._buffers, extra["buffers"], strict=True):
                for b, s in zip(mine, saved, strict=True):
                    b.copy_(s)
        self.meta_optimizer.load_state_dict(extra["meta_optimizer"])
        self._counts = [[int(c) for c in counts] for counts in extra["counts"]]
        self._grams = _copy_nested(extra["grams"])
        self._stats = [float(v) for v in extra["stats"]]

    def _repr_options(self) -> dict[str, Any]:
        return {
            "use_gcw": self.use_gcw,
            "use_gcode": self.use_gcode,
            "gcw_strength": self.gcw_strength,
            "gcode_strength": self.gcode_strength,
            "history": self.history,
            "meta_lr": self.meta_lr,
        }


def _copy_nested(value: Any) -> Any:
    """Deep copy of nested lists of numbers."""
    return [_copy_nested(v) for v in value] if isinstance(value, list) else float(value)


def _shift_gram(old: list[list[float]], new_row: list[float]) -> list[list[float]]:
    """Lag-ordered Gram after one step: old entries move down one lag, row/column 0 is new."""
    k1 = len(new_row)
    gram = [[0.0] * k1 for _ in range(k1)]
    for a in range(1, k1):
        for b in range(1, k1):
            gram[a][b] = old[a - 1][b - 1]
    for m in range(k1):
        gram[0][m] = gram[m][0] = new_row[m]
    return gram


def _apply_mix(grad: torch.Tensor, buf: torch.Tensor, mix: list[float], lag_slot: list[int]):
    """``grad ← Σ_k mix_k g_{t−k}`` in place (``grad`` is ``g_t``; zero weights are skipped)."""
    if mix[0] != 1.0:
        grad.mul_(mix[0])
    for k in range(1, len(mix)):
        if mix[k] != 0.0:
            grad.add_(buf[lag_slot[k]].view(grad.shape), alpha=mix[k])


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
    """``GradientCorrectionOptimizer(base_optimizer(params, lr=lr, **base_kwargs), ...)``."""
    check_positive("lr", lr)
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
    )
