r"""LoCal's learning-mode selection: when the transition layer :math:`T` moves (our design).

After every epoch the optimizer records each layer's relative weight change
:math:`u_i = \lVert W_i(e) - W_i(e-1)\rVert / \lVert W_i(e-1)\rVert` and asks its policy for the
next :math:`T`. The optimizer enforces the rest: :math:`T` never decreases, never exceeds the cap,
and stays 0 during the warm-up epochs. :class:`FreezeOutSelection` is step-based instead: layer
:math:`i` leaves SGD once the fraction of training done reaches its time :math:`t_i` (FreezeOut's
schedule, Brock et al. 2017). Reasons and measurements: ``docs/algorithms/localized.md``.
"""

from __future__ import annotations

import math
from typing import Any

from .._validation import check_choice, check_int, check_range

__all__ = [
    "SELECTIONS",
    "SPACINGS",
    "DynamicSelection",
    "FreezeOutSelection",
    "SelectionPolicy",
    "StaticSelection",
]

SPACINGS = ("linear", "cubic")


class SelectionPolicy:
    """Decides the next transition layer from the finished epochs; holds its own state."""

    name = ""
    step_based = False  # True: T follows the step count (transition_at), not the epoch ends

    def next_transition(
        self, transition: int, completed: int, warmup: int, updates: list[float]
    ) -> int:
        """The wished ``T`` after ``completed`` epochs (the caller clips it to ``[T, cap]``)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class StaticSelection(SelectionPolicy):
    r"""A fixed schedule: :math:`T(c) = k\,(\lfloor (c - w)/s \rfloor + 1)` after :math:`c \ge w`.

    ``static_step`` :math:`k` more layers go localized every ``static_interval`` :math:`s` epochs
    after the :math:`w` warm-up epochs.
    """

    name = "static"

    def __init__(self, static_step: int = 1, static_interval: int = 1) -> None:
        self.step = check_int("static_step", static_step, 1)
        self.interval = check_int("static_interval", static_interval, 1)

    def next_transition(
        self, transition: int, completed: int, warmup: int, updates: list[float]
    ) -> int:
        return self.step * ((completed - warmup) // self.interval + 1)


class DynamicSelection(SelectionPolicy):
    r"""Follow the transition layer's updates: move once they have settled.

    With :math:`u` the transition layer's latest relative update and :math:`u^+` its largest so far
    (the layer has always been on SGD, so its whole history is gradient-driven):

    .. math::
        T \leftarrow T + \big\lfloor \log(u^+/u) / \log(1/\rho) \big\rfloor,
        \qquad \rho = \text{settle\_ratio}

    An update that halved (at :math:`\rho = 1/2`) moves :math:`T` by one layer, one that fell to a
    quarter by two. State: the per-layer peak update (:math:`u^+`).
    """

    name = "dynamic"

    def __init__(self, settle_ratio: float = 0.5) -> None:
        self.settle_ratio = check_range(
            "settle_ratio", settle_ratio, 0.0, 1.0, low_open=True, high_open=True
        )
        self.peaks: list[float] = []

    def observe(self, updates: list[float]) -> None:
        """Record one epoch's per-layer relative updates."""
        if not self.peaks:
            self.peaks = list(updates)
        else:
            self.peaks = [max(p, u) for p, u in zip(self.peaks, updates, strict=True)]

    def next_transition(
        self, transition: int, completed: int, warmup: int, updates: list[float]
    ) -> int:
        latest, peak = updates[transition], self.peaks[transition]
        if latest <= 0.0:
            return len(updates)  # the layer no longer moves at all: as far as the cap allows
        shift = math.floor(math.log(peak / latest) / math.log(1.0 / self.settle_ratio) + 1e-12)
        return transition + max(0, shift)

    def state_dict(self) -> dict[str, Any]:
        return {"peaks": list(self.peaks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peaks = [float(p) for p in state["peaks"]]


class FreezeOutSelection(SelectionPolicy):
    r"""FreezeOut's schedule: layer :math:`i` of :math:`n` leaves SGD at the fraction :math:`t_i`.

    .. math::
        t_i = t_0 + (1 - t_0)\,\frac{i}{n-1} \ \text{(linear)}, \qquad
        t_i = \Big(t_0^{1/3} + (1 - t_0^{1/3})\,\frac{i}{n-1}\Big)^3 \ \text{(cubic)}

    so the first layer goes at :math:`t_0`, the last at 1. :math:`T` after :math:`s` of :math:`S`
    steps is the number of layers with :math:`t_i \le s/S` (the optimizer moves it after every
    step and clips it to the cap; :meth:`next_transition`, at epoch ends, keeps it).
    """

    name = "freezeout"
    step_based = True

    def __init__(self, t_0: float = 0.512, spacing: str = "cubic") -> None:
        self.t_0 = check_range("t_0", t_0, 0.0, 1.0, low_open=True)
        self.spacing = check_choice("spacing", spacing, SPACINGS)

    def times(self, n_layers: int) -> list[float]:
        r""":math:`t_0 \dots t_{n-1}` (non-decreasing, the last is 1)."""
        if self.spacing == "linear":
            start, power = self.t_0, 1
        else:
            start, power = self.t_0 ** (1.0 / 3.0), 3
        last = max(n_layers - 1, 1)
        return [(start + (1.0 - start) * i / last) ** power for i in range(n_layers)]

    def next_transition(
        self, transition: int, completed: int, warmup: int, updates: list[float]
    ) -> int:
        return transition  # T follows the steps (transition_at), not the epochs


SELECTIONS: dict[str, type[SelectionPolicy]] = {
    "static": StaticSelection,
    "dynamic": DynamicSelection,
    "freezeout": FreezeOutSelection,
}
