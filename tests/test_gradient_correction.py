"""Gradient Correction (GC-W, GC-ODE): identity at start, learning, convergence, contract, resume."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advanced_optimizers.gradient_correction import (
    GradientCorrectionOptimizer,
    create_gradient_correction_optimizer,
)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def data(n_batches: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 3, (16,), generator=g)
        x = torch.randn(16, 6, generator=g)
        x[:, 0] += 2.0 * y
        out.append((x, y))
    return out


def train(model: nn.Module, opt: torch.optim.Optimizer, batches) -> list[float]:
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def quadratic_problem(seed: int = 0) -> tuple[torch.nn.Parameter, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.nn.Parameter(torch.randn(20)), torch.linspace(0.1, 1.0, 20)


# -- identity at initialisation ---------------------------------------------------------------
@pytest.mark.parametrize("base", [torch.optim.Adam, torch.optim.SGD])
def test_identity_at_initialisation(base) -> None:
    """With meta_lr tiny enough to be invisible only the first corrections are tested exactly:
    until the history is full and the modules have learned nothing, GC equals the base optimizer."""
    batches = data(3)  # K=2: corrections start at the third step, with untrained coefficients
    ref_model, gc_model = tiny_model(), tiny_model()
    kwargs = {"momentum": 0.9} if base is torch.optim.SGD else {}
    ref = base(ref_model.parameters(), lr=0.05, **kwargs)
    gc = create_gradient_correction_optimizer(
        gc_model.parameters(), lr=0.05, base_optimizer=base, **kwargs
    )
    train(ref_model, ref, batches)
    train(gc_model, gc, batches)
    for a, b in zip(ref_model.parameters(), gc_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_first_correction_is_zero_then_coefficients_move() -> None:
    x, diag = quadratic_problem()
    opt = create_gradient_correction_optimizer([x], lr=0.01, base_optimizer=torch.optim.SGD)
    start = opt.coefficients()[0].clone()
    for step in range(3):
        opt.zero_grad()
        (0.5 * (diag * x * x).sum()).backward()
        raw = x.grad.clone()
        opt.step()
        if step == 2:  # first step with a full history: coefficients still at identity
            torch.testing.assert_close(x.grad, raw, rtol=0, atol=0)
    assert torch.equal(start, torch.tensor([[1.0, 0.0, 0.0]]))
    assert not torch.equal(opt.coefficients()[0], start)  # the modules learned at step 3


# -- the modules learn --------------------------------------------------------------------------
def test_predictor_error_falls_on_a_quadratic() -> None:
    """GD on a quadratic gives gradients g_{t+1} = (I − ηA) g_t: predictable. The least-squares
    GC-W predictor's relative error must fall well below its early value and below the naive one."""
    x, diag = quadratic_problem()
    opt = create_gradient_correction_optimizer(
        [x],
        lr=0.01,
        base_optimizer=torch.optim.SGD,
        meta_lr=1e-2,
        use_gcode=False,
        predictor_decay=0.9,  # deterministic, non-stationary gradients: a short memory
        ridge=1e-6,
    )
    errors = []
    for _ in range(6):
        for _ in range(50):
            opt.zero_grad()
            (0.5 * (diag * x * x).sum()).backward()
            opt.step()
        errors.append(opt.diagnostics())
    early, late = errors[0]["gcw_pred_error"], errors[-1]["gcw_pred_error"]
    assert late < 0.5 * early
    assert late < 0.5 * errors[-1]["gcw_naive_error"]


def test_ode_coefficient_learns_to_lengthen_steps_on_a_quadratic() -> None:
    """With a small step on a quadratic, more movement along the gradient lowers the next loss, so
    the hypergradient must make ``c`` negative (adding a multiple of ``g_{t−1} − g_t = ηA g``)."""
    x, diag = quadratic_problem()
    opt = create_gradient_correction_optimizer(
        [x], lr=0.01, base_optimizer=torch.optim.SGD, meta_lr=1e-2, use_gcw=False, gcw_strength=0
    )
    for _ in range(100):
        opt.zero_grad()
        (0.5 * (diag * x * x).sum()).backward()
        opt.step()
    assert opt.coefficients()[0][0, -1] < -0.3


@pytest.mark.parametrize("base", [torch.optim.Adam, torch.optim.SGD])
def test_converges_on_rosenbrock(base) -> None:
    xy = torch.nn.Parameter(torch.tensor([-1.5, 2.0]))
    lr = 2e-2 if base is torch.optim.Adam else 5e-4
    kwargs = {"momentum": 0.9} if base is torch.optim.SGD else {}
    opt = create_gradient_correction_optimizer(
        [xy], lr=lr, base_optimizer=base, gcw_strength=0.5, meta_lr=1e-2, **kwargs
    )

    def rosenbrock() -> torch.Tensor:
        return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2

    start = rosenbrock().item()
    for _ in range(1500):
        opt.zero_grad()
        rosenbrock().backward()
        opt.step()
    assert rosenbrock().item() < 1e-3 * start  # 12.5 -> < 0.0125 (the base alone: ~1e-3)
    assert torch.allclose(xy.detach(), torch.ones(2), atol=0.15)


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"gcw_strength": -0.1}, ValueError, "gcw_strength"),
        ({"gcode_strength": -1.0}, ValueError, "gcode_strength"),
        ({"use_gcw": False, "use_gcode": False}, ValueError, "both False"),
        ({"history": 1}, ValueError, "history"),
        ({"meta_lr": 0.0}, ValueError, "meta_lr"),
        ({"use_gcw": 1}, TypeError, "use_gcw"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"device": "meta"}, ValueError, "device"),
    ],
)
def test_bad_arguments_raise(kwargs, exc, words) -> None:
    with pytest.raises(exc, match=words):
        create_gradient_correction_optimizer(tiny_model().parameters(), **kwargs)


def test_both_off_with_zero_strengths_is_the_base_optimizer() -> None:
    ref_model, gc_model = tiny_model(), tiny_model()
    ref = torch.optim.Adam(ref_model.parameters(), lr=1e-2)
    gc = create_gradient_correction_optimizer(
        gc_model.parameters(),
        lr=1e-2,
        use_gcw=False,
        use_gcode=False,
        gcw_strength=0.0,
        gcode_strength=0.0,
    )
    batches = data(5)
    train(ref_model, ref, batches)
    train(gc_model, gc, batches)
    for a, b in zip(ref_model.parameters(), gc_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_base_must_be_an_optimizer() -> None:
    with pytest.raises(TypeError, match="base"):
        GradientCorrectionOptimizer(object())  # type: ignore[arg-type]


# -- contract -----------------------------------------------------------------------------------
def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _build(seed: int = 0):
    model = tiny_model(seed)
    return model, create_gradient_correction_optimizer(
        model.parameters(), lr=1e-2, gcw_strength=0.5, meta_lr=1e-2
    )


def test_state_round_trip_continues_identically() -> None:
    batches = data(12)
    model, opt = _build()
    train(model, opt, batches)
    reference = [p.detach().clone() for p in model.parameters()]
    reference_coefs = opt.coefficients()

    model, opt = _build()
    train(model, opt, batches[:6])
    saved = _roundtrip({"model": model.state_dict(), "opt": opt.state_dict()})
    assert "extra" in saved["opt"] and saved["opt"]["extra"]["meta_optimizer"]["state"]
    model, opt = _build(seed=5)  # different weights: everything must come from the checkpoint
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    train(model, opt, batches[6:])
    for got, want in zip(model.parameters(), reference, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(opt.coefficients(), reference_coefs, strict=True):
        assert torch.equal(got, want)


def test_load_rejects_other_history() -> None:
    model, opt = _build()
    other = create_gradient_correction_optimizer(model.parameters(), history=3)
    with pytest.raises(ValueError, match="history"):
        other.load_state_dict(opt.state_dict())


def test_nonfinite_gradient_skips_and_keeps_state_clean() -> None:
    model, opt = _build()
    train(model, opt, data(4))
    before_params = [p.detach().clone() for p in model.parameters()]
    before_state = copy.deepcopy(opt.state_dict())
    x, y = data(1, seed=9)[0]
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    model[0].weight.grad[0, 0] = float("inf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    assert any("finite" in str(w.message) for w in caught)
    assert opt.skipped_steps == 1
    for got, want in zip(model.parameters(), before_params, strict=True):
        assert torch.equal(got, want)
    after = opt.state_dict()
    for got, want in zip(after["extra"]["groups"], before_state["extra"]["groups"], strict=True):
        assert torch.equal(got["coef"], want["coef"])  # the coefficients
        for a, b in zip(got["ring"], want["ring"], strict=True):  # the gradient history
            assert torch.equal(a, b)
        for key in ("gram", "A", "b"):  # the Gram cache and the predictor's statistics
            assert torch.equal(got[key], want[key])
    train(model, opt, data(2))  # and training goes on with finite numbers
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_grad_none_param_is_skipped_and_its_coefficients_stay() -> None:
    model, opt = _build()
    train(model, opt, data(5))
    x, y = data(1, seed=3)[0]
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    model[0].weight.grad = None
    weight = model[0].weight.detach().clone()
    row_before = opt.coefficients()[0][0].clone()
    opt.step()
    assert torch.equal(model[0].weight.detach(), weight)
    assert torch.equal(opt.coefficients()[0][0], row_before)
    assert not torch.equal(opt.coefficients()[0][1:], opt.coefficients()[0][1:] * 0)


def test_schedulers_add_param_group_deepcopy_repr_closure() -> None:
    model, opt = _build()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, data(2))
    sched.step()
    assert opt.base.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert opt.param_groups is opt.base.param_groups

    extra = torch.nn.Parameter(torch.ones(3))
    opt.add_param_group({"params": [extra]})
    for x, y in data(4):
        opt.zero_grad()
        (F.cross_entropy(model(x), y) + (extra**2).sum()).backward()
        opt.step()
    assert not torch.equal(extra.detach(), torch.ones(3))
    assert len(opt.coefficients()) == 2

    x, y = data(1)[0]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    assert torch.isfinite(opt.step(closure))
    clone = copy.deepcopy(opt)
    assert type(clone) is GradientCorrectionOptimizer
    assert "GradientCorrectionOptimizer" in repr(opt)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype) -> None:
    model = tiny_model().to(dtype)
    opt = create_gradient_correction_optimizer(model.parameters(), lr=1e-2, meta_lr=1e-2)
    for x, y in data(5):
        opt.zero_grad()
        F.cross_entropy(model(x.to(dtype)).float(), y).backward()
        opt.step()
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in model.parameters())


def test_harness_methods_registered_and_log_diagnostics() -> None:
    from advanced_optimizers.bench.methods import EpochInfo, Setup, get_method

    for name in ("gc-adam", "gc-sgd"):
        method = get_method(name, gcw_strength=0.5)
        model = tiny_model()
        setup = Setup(lr=1e-2, epochs=1, steps_per_epoch=4, n_train=64, num_classes=3)
        opt = method.build_optimizer(model, setup)
        assert isinstance(opt, GradientCorrectionOptimizer)
        train(model, opt, data(4))
        extras = method.end_epoch(model, opt, EpochInfo(1, 1), 0.0)
        assert set(extras) == {"gcw_pred_error", "gcw_naive_error", "gcode_coef", "grad_cosine"}
        assert all(v == v for v in extras.values())  # not NaN: the modules ran
    with pytest.raises(TypeError):
        get_method("gc-adam", bogus=1)
