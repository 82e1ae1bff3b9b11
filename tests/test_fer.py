"""FER: the loss against a direct computation, the store update, warm-up, resume, misuse, harness."""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advanced_optimizers.bench.train import RunConfig, train_run
from advanced_optimizers.fer import FEROptimizer, create_fer_optimizer, fer_lambda

C = 3


def make_opt(memory_size: int = 6, **kwargs) -> tuple[nn.Parameter, FEROptimizer]:
    p = nn.Parameter(torch.zeros(2))
    kwargs.setdefault("epochs", 5)
    opt = FEROptimizer([p], torch.optim.Adam, {"lr": 1e-3}, memory_size=memory_size, **kwargs)
    return p, opt


def softmax_list(row: list[float], t: float = 1.0) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def direct_loss(logits, targets, indices, store, flags, epoch, epochs, gamma, t) -> float:
    """The paper's formula written out per sample with the math module."""
    lam = epoch / epochs * (1 - gamma)
    total = 0.0
    for row, y, i in zip(logits, targets, indices, strict=True):
        ce = -math.log(softmax_list(row)[y])
        if flags[i]:
            q = softmax_list(row, t)
            soft_ce = -sum(s * math.log(qk) for s, qk in zip(store[i], q, strict=True))
            total += (1 - lam) * ce + lam * t * t * soft_ce
        else:
            total += ce
    return total / len(targets)


LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-0.5, 1.5, 0.0], [1.0, 1.0, 3.0]]
TARGETS = [0, 2, 1, 0]
INDICES = [4, 0, 2, 5]
STORE = [[0.2, 0.3, 0.1], [0.0] * 3, [0.1, 0.7, 0.1], [0.0] * 3, [0.5, 0.2, 0.2], [0.3, 0.3, 0.3]]
FLAGS = [False, False, True, False, True, True]  # index 0 is never-correct; 4, 2, 5 remembered


def loaded_opt(**kwargs) -> FEROptimizer:
    _, opt = make_opt(num_classes=C, **kwargs)
    opt.soft_targets.copy_(torch.tensor(STORE))
    opt.ever_correct.copy_(torch.tensor(FLAGS))
    return opt


@pytest.mark.parametrize("epoch,gamma,t", [(3, 0.1, 5.0), (5, 0.3, 2.0), (2, 0.0, 1.0)])
def test_loss_equals_direct_formula(epoch: int, gamma: float, t: float) -> None:
    opt = loaded_opt(fer_weight=gamma, temperature=t, warmup_epochs=1)
    opt.set_epoch(epoch)
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    loss = opt.fer_loss(logits, torch.tensor(TARGETS), torch.tensor(INDICES))
    want = direct_loss(LOGITS, TARGETS, INDICES, STORE, FLAGS, epoch, 5, gamma, t)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert opt.current_lambda == pytest.approx(fer_lambda(epoch, 5, gamma))
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_gradient_matches_autograd_of_direct_formula() -> None:
    opt = loaded_opt()
    opt.set_epoch(4)
    z = torch.tensor(LOGITS, requires_grad=True)
    y, idx = torch.tensor(TARGETS), torch.tensor(INDICES)
    (grad,) = torch.autograd.grad(opt.fer_loss(z, y, idx), z)
    s, f = torch.tensor(STORE)[idx], torch.tensor(FLAGS)[idx]
    lam = 4 / 5 * 0.9
    ce = F.cross_entropy(z, y, reduction="none")
    kd = -(s * F.log_softmax(z / 5, dim=1)).sum(1) * 25
    (want,) = torch.autograd.grad(torch.where(f, (1 - lam) * ce + lam * kd, ce).mean(), z)
    torch.testing.assert_close(grad, want)


def test_store_updates_only_confident_correct_rows_with_alpha() -> None:
    mu, t = 0.7, 4.0
    opt = loaded_opt(consistency_threshold=0.5, mu=mu, temperature=t)
    opt.set_epoch(3)
    before_s, before_f = opt.soft_targets.clone(), opt.ever_correct.clone()
    # rows: correct & confident, correct but p_y < 0.5, wrong, correct & confident (new sample)
    logits = [[3.0, 0.0, 0.0], [0.5, 0.0, 0.6], [0.0, 2.0, 0.0], [4.0, 1.0, 0.0]]
    targets, indices = [0, 2, 0, 0], [2, 4, 5, 1]
    opt.fer_loss(torch.tensor(logits), torch.tensor(targets), torch.tensor(indices))
    opt.criterion.commit()  # what a taken step does
    for row, y, i in zip(logits, targets, indices, strict=True):
        p = softmax_list(row)
        updated = p.index(max(p)) == y and p[y] >= 0.5
        if updated:
            alpha = 1 - math.exp(-mu * p[y])
            q = softmax_list(row, t)
            want = [
                (1 - alpha) * s + alpha * qk for s, qk in zip(before_s[i].tolist(), q, strict=True)
            ]
            assert opt.soft_targets[i].tolist() == pytest.approx(want, rel=1e-5)
            assert opt.ever_correct[i]
        else:
            assert torch.equal(opt.soft_targets[i], before_s[i])
            assert opt.ever_correct[i] == before_f[i]  # wrong: flag kept (sticky), no new flag
    untouched = [0, 3]
    assert torch.equal(opt.soft_targets[untouched], before_s[untouched])


def test_threshold_zero_is_the_official_rule_and_flag_is_sticky() -> None:
    _, opt = make_opt(num_classes=C, consistency_threshold=0.0)
    opt.set_epoch(2)
    z = torch.tensor([[0.5, 0.0, 0.45]])  # correct with p_y ≈ 0.36 < 0.9: counts when τ = 0
    opt.fer_loss(z, torch.tensor([0]), torch.tensor([3]))
    opt.criterion.commit()
    assert opt.ever_correct[3] and opt.soft_targets[3].sum() > 0
    kept = opt.soft_targets[3].clone()
    opt.fer_loss(torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([0]), torch.tensor([3]))  # wrong
    opt.criterion.commit()
    assert opt.ever_correct[3] and torch.equal(opt.soft_targets[3], kept)


def test_nonfinite_logits_never_enter_the_store() -> None:
    _, opt = make_opt(num_classes=C, consistency_threshold=0.0)
    opt.set_epoch(2)
    z = torch.tensor([[math.nan, 0.0, 0.0], [math.inf, 0.0, 0.0], [5.0, 0.0, 0.0]])
    opt.fer_loss(z, torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]))
    opt.criterion.commit()
    assert torch.isfinite(opt.soft_targets).all()
    assert opt.ever_correct.tolist() == [False, False, True, False, False, False]


def test_warmup_is_plain_ce_and_fills_store_in_its_last_epoch() -> None:
    opt = loaded_opt(warmup_epochs=2, consistency_threshold=0.5)
    opt.ever_correct.zero_()
    opt.soft_targets.zero_()
    z = torch.tensor(LOGITS)
    y, idx = torch.tensor(TARGETS), torch.tensor(INDICES)
    opt.set_epoch(1)
    assert opt.fer_loss(z, y, idx).item() == pytest.approx(F.cross_entropy(z, y).item())
    opt.criterion.commit()
    assert not opt.ever_correct.any() and not opt.soft_targets.any()  # not the last warm-up epoch
    opt.set_epoch(2)
    assert opt.fer_loss(z, y, idx).item() == pytest.approx(F.cross_entropy(z, y).item())
    opt.criterion.commit()
    correct = (z.argmax(1) == y) & (z.softmax(1).gather(1, y[:, None]).squeeze(1) >= 0.5)
    assert opt.ever_correct[idx].tolist() == correct.tolist() and correct.any()
    opt.set_epoch(3)  # FER now active: the loss differs from CE for the flagged rows
    assert opt.fer_active
    assert opt.fer_loss(z, y, idx).item() != pytest.approx(F.cross_entropy(z, y).item())


def test_fer_weight_one_is_plain_cross_entropy() -> None:
    opt = loaded_opt(fer_weight=1.0)
    opt.set_epoch(5)
    z, y = torch.tensor(LOGITS), torch.tensor(TARGETS)
    loss = opt.fer_loss(z, y, torch.tensor(INDICES))
    assert loss.item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)


# -- training-loop behaviour ----------------------------------------------------------------------
N, EPOCHS, BATCH = 48, 3, 12


def toy_data():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (N,), generator=g)
    x = torch.randn(N, 8, generator=g)
    x[:, 0] += 2.0 * y
    return x, y


def build(memory_size: int = N, **kwargs) -> tuple[nn.Module, FEROptimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, C))
    kwargs.setdefault("consistency_threshold", 0.5)
    opt = create_fer_optimizer(
        model.parameters(), lr=1e-2, memory_size=memory_size, epochs=EPOCHS, **kwargs
    )
    return model, opt


def run(model, opt, steps: list[tuple[int, int]]) -> list[float]:
    """Train on (epoch, batch number) pairs; data order depends on the epoch only."""
    x, y = toy_data()
    losses = []
    for epoch, b in steps:
        opt.set_epoch(epoch)
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
        idx = order[b * BATCH : (b + 1) * BATCH]
        opt.zero_grad()
        loss = opt.fer_loss(model(x[idx]), y[idx], idx)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


ALL_STEPS = [(e, b) for e in range(1, EPOCHS + 1) for b in range(N // BATCH)]


def roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_mid_epoch_state_dict_roundtrip_continues_identically() -> None:
    model, opt = build()
    reference = run(model, opt, ALL_STEPS)
    ref_params = [p.detach().clone() for p in model.parameters()]
    ref_store = opt.soft_targets.clone()
    assert opt.ever_correct.any() and ref_store.any()

    cut = ALL_STEPS.index((2, 2))  # in the middle of the first FER epoch
    model, opt = build()
    first = run(model, opt, ALL_STEPS[:cut])
    saved = roundtrip({"model": model.state_dict(), "opt": opt.state_dict()})
    model, opt = build()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    rest = run(model, opt, ALL_STEPS[cut:])
    assert first + rest == reference
    for got, want in zip(model.parameters(), ref_params, strict=True):
        assert torch.equal(got.detach(), want)
    assert torch.equal(opt.soft_targets, ref_store)


def test_memory_size_larger_than_dataset_changes_nothing() -> None:
    model_a, opt_a = build()
    model_b, opt_b = build(memory_size=3 * N)
    assert run(model_a, opt_a, ALL_STEPS) == run(model_b, opt_b, ALL_STEPS)
    assert torch.equal(opt_a.soft_targets, opt_b.soft_targets[:N])
    assert not opt_b.ever_correct[N:].any()


def test_fer_training_learns_and_diverges_from_base_after_warmup() -> None:
    model, opt = build()
    losses = run(model, opt, ALL_STEPS)
    torch.manual_seed(0)
    base_model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, C))
    base = torch.optim.Adam(base_model.parameters(), lr=1e-2)
    x, y = toy_data()
    for p, q in zip(model.parameters(), base_model.parameters(), strict=True):
        assert p.shape == q.shape
    steps_per_epoch = N // BATCH
    base_losses = []
    for epoch, b in ALL_STEPS[:steps_per_epoch]:
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
        idx = order[b * BATCH : (b + 1) * BATCH]
        base.zero_grad()
        loss = F.cross_entropy(base_model(x[idx]), y[idx])
        loss.backward()
        base.step()
        base_losses.append(loss.item())
    assert losses[:steps_per_epoch] == pytest.approx(base_losses, rel=1e-6)  # warm-up = Adam + CE
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.45  # chance is 1/3
    assert opt.store_summary()["fer_flagged"] > 0.2


# -- misuse ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        ({"fer_weight": -0.1}, ValueError, "fer_weight"),
        ({"fer_weight": 1.5}, ValueError, "fer_weight"),
        ({"consistency_threshold": 1.2}, ValueError, "consistency_threshold"),
        ({"memory_size": 0}, ValueError, "memory_size"),
        ({"memory_size": 2.5}, TypeError, "memory_size"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"mu": -1.0}, ValueError, "mu"),
        ({"warmup_epochs": -1}, ValueError, "warmup_epochs"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"base_optimizer_kwargs": {"lr": -1.0}}, ValueError, "learning rate"),
    ],
)
def test_bad_construction_names_the_argument(kwargs, exc, words) -> None:
    with pytest.raises(exc, match=words):
        FEROptimizer([nn.Parameter(torch.zeros(1))], **kwargs)


def test_bad_batches_name_the_argument() -> None:
    _, opt = make_opt(num_classes=C)
    opt.set_epoch(2)
    z, y = torch.zeros(2, C), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="memory_size"):
        opt.fer_loss(z, y, torch.tensor([0, 6]))  # index == memory_size: no silent wrap-around
    with pytest.raises(ValueError, match="indices must lie"):
        opt.fer_loss(z, y, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="indices must be an integer"):
        opt.fer_loss(z, y, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="indices must have shape"):
        opt.fer_loss(z, y, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets must have shape"):
        opt.fer_loss(z, torch.tensor([0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logits must have 3 classes"):
        opt.fer_loss(torch.zeros(2, 4), y, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epoch must be in"):
        opt.set_epoch(6)
    _, fresh = make_opt(epochs=None)
    with pytest.raises(RuntimeError, match="set_epoch"):
        fresh.fer_loss(z, y, torch.tensor([0, 1]))
    fresh.set_epoch(1)
    with pytest.raises(RuntimeError, match="epochs"):
        fresh.fer_loss(z, y, torch.tensor([0, 1]))


def test_stepping_without_fer_loss_warns_once_per_epoch() -> None:
    model, opt = build()
    x, y = toy_data()
    opt.set_epoch(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert sum("FER is inactive" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(model, opt, ALL_STEPS[4:6])  # with fer_loss: no warning


# -- Optimizer contract ---------------------------------------------------------------------------
def test_contract_basics() -> None:
    model, opt = build()
    run(model, opt, ALL_STEPS[:5])
    assert opt.param_groups is opt.base.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    run(model, opt, ALL_STEPS[5:6])
    sched.step()
    assert opt.base.param_groups[0]["lr"] == pytest.approx(5e-3)
    x, y = toy_data()

    def closure():
        opt.zero_grad()
        loss = opt.fer_loss(model(x[:4]), y[:4], torch.arange(4))
        loss.backward()
        return loss

    assert torch.isfinite(opt.step(closure))
    extra = nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [extra]})
    opt.zero_grad()
    (opt.fer_loss(model(x[:4]), y[:4], torch.arange(4)) + extra.sum()).backward()
    first = model[0].weight
    first.grad = None
    before = first.detach().clone()
    opt.step()
    assert torch.equal(first.detach(), before) and not torch.equal(extra.detach(), torch.ones(2))
    opt.zero_grad()
    assert all(p.grad is None for g in opt.param_groups for p in g["params"])
    clone = copy.deepcopy(opt)
    assert torch.equal(clone.soft_targets, opt.soft_targets) and clone.epoch == opt.epoch
    assert "FEROptimizer" in repr(opt) and "Adam" in repr(opt)


def test_nonfinite_gradient_skips_step() -> None:
    model, opt = build()
    run(model, opt, ALL_STEPS[:6])
    state = copy.deepcopy(opt.state_dict())
    params = [p.detach().clone() for p in model.parameters()]
    x, y = toy_data()
    opt.zero_grad()
    opt.fer_loss(model(x[:4]), y[:4], torch.arange(4)).backward()
    model[0].weight.grad[0, 0] = math.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    base_state = opt.state_dict()["state"]
    for key, value in state["state"].items():
        assert torch.equal(base_state[key]["exp_avg"], value["exp_avg"])
    assert torch.isfinite(opt.soft_targets).all()


def test_load_state_dict_refuses_other_memory_size() -> None:
    _, opt = build()
    _, other = build(memory_size=N + 1)
    with pytest.raises(ValueError, match="memory_size"):
        other.load_state_dict(opt.state_dict())


# -- harness --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fer-adam", "fer-sgd"])
def test_harness_methods_run(toy, method: str) -> None:
    small = toy.subset(128, 64)
    options = {"consistency_threshold": 0.0}
    config = RunConfig(method=method, options=options, epochs=2, batch_size=32, seed=0)
    result = train_run(config, small)
    last = result.history[-1]
    assert last["fer_lambda"] == pytest.approx(0.9) and 0 < last["fer_flagged"] <= 1
    assert result.correct.shape == (2, 64)
    assert last["train_loss"] == last["train_loss"]  # finite, not NaN


def test_distributed_rows_are_tracked_synced_and_a_missing_sync_warns(monkeypatch) -> None:
    """Under torch.distributed the pending rows are shared by sync_distributed (here a 1-rank
    stand-in: the gather returns this rank's rows, so the committed store must be the one a
    single process writes); a step without the sync warns and still commits this rank's rows."""
    import advanced_optimizers.fer.loss as fer_module

    monkeypatch.setattr(fer_module, "is_distributed", lambda group=None: True)
    monkeypatch.setattr(fer_module, "all_gather_rows", lambda rows, group=None: [rows])
    single = loaded_opt(consistency_threshold=0.0)
    single.set_epoch(3)
    opt = loaded_opt(consistency_threshold=0.0)
    opt.set_epoch(3)
    z, y, idx = torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(INDICES)
    single.fer_loss(z, y, idx)
    single.criterion.commit()
    opt.fer_loss(z, y, idx)
    assert torch.equal(opt.criterion._pending[0][0], idx)
    opt.sync_distributed()
    opt.criterion.commit()
    assert torch.equal(opt.soft_targets, single.soft_targets)
    assert torch.equal(opt.ever_correct, single.ever_correct)
    opt.fer_loss(z, y, idx)
    with pytest.warns(RuntimeWarning, match="sync_distributed"):
        opt.step()
    assert opt.criterion._pending == []
