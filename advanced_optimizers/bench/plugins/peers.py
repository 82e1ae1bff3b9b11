"""The peers: well-kept optimizers a user would pick instead of ours, trained by the same harness.

Methods ``nadam`` (``torch.optim.NAdam``), ``schedulefree-adamw`` (``schedulefree.AdamWScheduleFree``)
and ``adan``, ``mars``, ``lookahead-adam`` (``pytorch_optimizer.Adan``, ``MARS`` and ``Lookahead``
around ``torch.optim.Adam``). Each runs at its library's documented defaults: ``default_lr`` is the
``lr`` default of the optimizer's signature (``lookahead-adam``: torch Adam's 1e-3; Lookahead itself
has no learning rate) and every other option is a keyword parameter of that signature
(``option_sources``), e.g. ``--opt schedulefree-adamw:warmup_steps=500`` or ``--opt adan:max_grad_norm=1``.
The harness supplies ``lr`` and ``weight_decay`` (0 unless ``--weight-decay``), which each library
applies in its own way (coupled L2 for NAdam and Adan, decoupled for MARS, at y for schedule-free).

Schedule-free keeps two points: gradients are taken at ``y`` (the model's weights while in train
mode) and the averaged ``x`` is the one to evaluate. :meth:`ScheduleFreeAdamW.train_mode` and
:meth:`ScheduleFreeAdamW.eval_mode` call ``optimizer.train()`` / ``optimizer.eval()`` where the
loop switches, so evaluation and the checkpoint (written after evaluation, in eval mode, as the
package asks) hold ``x``; a resumed run switches back to ``y`` at the start of its next epoch exactly
as an uninterrupted one does. The package's README says no LR schedule is needed (the code is
compatible with one) and recommends warmup through ``warmup_steps`` (default 0; its own MNIST example
uses none): so ``--schedule`` does not apply to it (``manages_schedule``): with ``--schedule
cosine`` every other method is annealed and schedule-free runs as its authors run it.

``schedulefree`` and ``pytorch-optimizer`` come with the ``bench`` extra. They are imported when a
method is built, so this module (and ``advopt methods``) works without them; building one of their
methods then raises :class:`MissingPeerPackage` saying what to install.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from ..methods import Method, Setup, register
from ..options import OptionSource

__all__ = ["PEER_METHODS", "MissingPeerPackage"]

_SUPPLIED = frozenset({"params", "lr", "weight_decay"})


class MissingPeerPackage(ImportError, ValueError):
    """A peer's package is not installed (a ``ValueError`` too, so ``advopt`` prints it plainly)."""


class _Peer(Method):
    """A peer built from ``<module>.<attr>`` of the pip package ``package``."""

    package: ClassVar[str] = ""
    module: ClassVar[str] = ""
    attr: ClassVar[str] = ""
    supplied: ClassVar[frozenset[str]] = _SUPPLIED

    @classmethod
    def optimizer_class(cls) -> Callable[..., Any]:
        """The library callable, imported now; a clear error if its package is missing."""
        try:
            return getattr(importlib.import_module(cls.module), cls.attr)
        except ImportError as exc:
            raise MissingPeerPackage(
                f"method {cls.name!r} needs the package {cls.package!r} ({cls.module}.{cls.attr}), "
                "which comes with the bench extra: pip install 'advanced_optimizers[bench]' "
                f"(or pip install {cls.package})"
            ) from exc

    @property
    def option_sources(self) -> tuple[OptionSource, ...]:  # type: ignore[override]
        return ((self.optimizer_class(), self.supplied),)

    def __init__(self, **options: Any) -> None:
        try:
            self.optimizer_class()
        except MissingPeerPackage:
            if options:  # they cannot be checked without the library
                raise
            self.options = {}  # listed (advopt methods) but not buildable: build_optimizer raises
            return
        super().__init__(**options)

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        return self.optimizer_class()(
            model.parameters(), lr=setup.lr, weight_decay=setup.weight_decay, **self.options
        )


@register
class NAdam(_Peer):
    name = "nadam"
    summary = "NAdam, torch.optim (peer)"
    default_lr = 2e-3  # torch.optim.NAdam's default
    package, module, attr = "torch", "torch.optim", "NAdam"


@register
class ScheduleFreeAdamW(_Peer):
    name = "schedulefree-adamw"
    manages_schedule = True
    summary = "Schedule-free AdamW, schedulefree (peer; evaluates the averaged weights)"
    default_lr = 2.5e-3  # AdamWScheduleFree's default and its README's
    package, module, attr = "schedulefree", "schedulefree", "AdamWScheduleFree"

    def train_mode(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.train()  # type: ignore[attr-defined]  # weights <- y, where gradients are taken

    def eval_mode(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.eval()  # type: ignore[attr-defined]  # weights <- x, the average to evaluate


@register
class Adan(_Peer):
    name = "adan"
    summary = "Adan, pytorch-optimizer (peer)"
    default_lr = 1e-3  # pytorch_optimizer.Adan's default
    package, module, attr = "pytorch-optimizer", "pytorch_optimizer", "Adan"


@register
class MARS(_Peer):
    name = "mars"
    summary = "MARS (AdamW type), pytorch-optimizer (peer)"
    default_lr = 3e-3  # pytorch_optimizer.MARS's default
    package, module, attr = "pytorch-optimizer", "pytorch_optimizer", "MARS"


@register
class LookaheadAdam(_Peer):
    name = "lookahead-adam"
    summary = "Lookahead (k=5, alpha=0.5) around Adam, pytorch-optimizer (peer)"
    default_lr = 1e-3  # torch.optim.Adam's default (Lookahead has no learning rate of its own)
    package, module, attr = "pytorch-optimizer", "pytorch_optimizer", "Lookahead"
    supplied = frozenset({"optimizer"})

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        base = torch.optim.Adam(model.parameters(), lr=setup.lr, weight_decay=setup.weight_decay)
        return self.optimizer_class()(base, **self.options)


PEER_METHODS: tuple[type[_Peer], ...] = (NAdam, ScheduleFreeAdamW, Adan, MARS, LookaheadAdam)


def library_default_lr(cls: type[_Peer]) -> float:
    """The ``lr`` default of the signature a peer's ``default_lr`` is taken from."""
    target = torch.optim.Adam if cls is LookaheadAdam else cls.optimizer_class()
    return inspect.signature(target).parameters["lr"].default
