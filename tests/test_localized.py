"""LoCal+SGD: the Hebbian rule, the autograd-free localized layers, T selection, state, contract."""

from __future__ import annotations

import copy
import io
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advanced_optimizers.localized import (
    FreezeOutOptimizer,
    FreezeOutSelection,
    LocalizedOptimizer,
    create_freezeout_optimizer,
    create_localized_optimizer,
    find_localizable_layers,
    normalized_hebb_terms,
    oja_subspace_direction,
)


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    )


def small_mlp(widths=(10, 8, 7, 6, 3)) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def cnn_batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def training_step(model, opt, x, y) -> float:
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    opt.observe_loss(loss)
    loss.backward()
    opt.step()
    return loss.item()


# -- independent computation of the rule -------------------------------------------------------
def independent_direction(weight, bias, rows, pre_out, decorrelate=True):
    """(ŶᵀX − ŶᵀŶŴ)/Σ||x||² (without the decay term: ŶᵀX/Σ||x||², normalised Hebb) from explicit
    rows X (N, n) and outputs W x + b (N, m)."""
    w = weight.reshape(weight.shape[0], -1).double()
    norms = w.norm(dim=1)
    unit = w / norms[:, None]
    y = (pre_out.double() - (0 if bias is None else bias.double())) / norms
    x = rows.double()
    upd = torch.zeros_like(w)
    for r in range(x.shape[0]):  # sum of per-row outer products, no GEMM shortcut
        upd += torch.outer(y[r], x[r])
        if decorrelate:
            upd -= torch.outer(y[r], y[r]) @ unit
    return (upd / (x * x).sum()).reshape(weight.shape)


@pytest.mark.parametrize("shape", [(4, 3, 5), (50, 3, 5), (4, 20, 5)])  # residual/gram forms
def test_linear_direction_matches_independent(shape):
    n_rows, m, n = shape
    torch.manual_seed(1)
    layer = nn.Linear(n, m)
    x = torch.randn(n_rows, n)
    out = layer(x).detach()
    got = oja_subspace_direction(layer, x, out)
    want = independent_direction(layer.weight.detach(), layer.bias.detach(), x, out)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(3, 2, (3, 2), padding=(2, 1), dilation=2),
    ],
)
def test_conv_direction_matches_independent(conv):
    torch.manual_seed(2)
    x = torch.randn(3, conv.in_channels, 7, 6)
    out = conv(x).detach()
    got = oja_subspace_direction(conv, x, out)
    geometry = dict(padding=conv.padding, stride=conv.stride, dilation=conv.dilation)
    patches = F.unfold(x, conv.kernel_size, **geometry)  # (B, n, L)
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    outs = out.flatten(2).transpose(1, 2).reshape(-1, out.shape[1])
    bias = None if conv.bias is None else conv.bias.detach()
    want = independent_direction(conv.weight.detach(), bias, rows, outs)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_optimizer_step_applies_rule_on_subsample_and_keeps_row_norms(arch):
    torch.manual_seed(3)
    model = small_cnn() if arch == "cnn" else small_mlp()
    x, y = cnn_batch(8) if arch == "cnn" else (torch.randn(8, 10), torch.randint(0, 3, (8,)))
    rate, subsample = 0.3, 0.4
    opt = create_localized_optimizer(model, lr=0.1, hebbian_lr=rate, hebbian_subsample=subsample)
    opt.set_transition(2)
    layers = [m for _, m in opt.layers]
    inputs = {}
    hooks = [
        layer.register_forward_hook(lambda mod, a, o, i=i: inputs.__setitem__(i, (a[0], o)))
        for i, layer in enumerate(layers[:2])
    ]
    before = [layer.weight.detach().clone() for layer in layers]
    training_step(model, opt, x, y)
    keep = math.ceil(subsample * 8)
    for i in range(2):
        xi, oi = inputs[i]
        if arch == "cnn":
            conv = layers[i]
            geometry = dict(padding=conv.padding, stride=conv.stride, dilation=conv.dilation)
            p = F.unfold(xi[:keep], conv.kernel_size, **geometry)
            rows = p.transpose(1, 2).reshape(-1, p.shape[1])
            outs = oi[:keep].flatten(2).transpose(1, 2).reshape(-1, oi.shape[1])
        else:
            rows, outs = xi[:keep].reshape(keep, -1), oi[:keep]
        w0 = before[i].reshape(before[i].shape[0], -1).double()
        direction = independent_direction(before[i], layers[i].bias.detach(), rows, outs)
        unit = w0 / w0.norm(dim=1, keepdim=True) + rate * direction.reshape_as(w0)
        want = unit / unit.norm(dim=1, keepdim=True) * w0.norm(dim=1, keepdim=True)
        got = layers[i].weight.detach().reshape_as(w0).double()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        assert not torch.equal(layers[i].weight, before[i])
        torch.testing.assert_close(got.norm(dim=1), w0.norm(dim=1))
    for i in range(2, len(layers)):  # SGD layers moved by the base optimizer
        assert not torch.equal(layers[i].weight, before[i])
    for hook in hooks:
        hook.remove()


# -- no autograd graph for localized layers ----------------------------------------------------
def saved_tensor_ptrs(model, x, y):
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return saved


def test_localized_layers_build_no_graph():
    torch.manual_seed(4)
    model = small_cnn()
    x, y = cnn_batch()
    opt = create_localized_optimizer(model, lr=0.1)
    n_all = len(saved_tensor_ptrs(model, x, y))
    opt.zero_grad()
    opt.set_transition(2)
    local = [m for _, m in opt.layers[:2]]
    touched = set()
    kept = []  # keep the tensors alive: a freed storage's address may be reused by a saved one

    def record(mod, a, o):
        kept.extend([a[0], o])
        touched.update({a[0].untyped_storage().data_ptr(), o.untyped_storage().data_ptr()})

    hooks = [m.register_forward_hook(record) for m in local]
    saved = saved_tensor_ptrs(model, x, y)
    for m in local:
        touched.update(p.untyped_storage().data_ptr() for p in m.parameters())
        assert all(p.grad is None and not p.requires_grad for p in m.parameters())
    assert not touched & set(saved)
    assert 0 < len(saved) < n_all
    for _, m in opt.layers[2:]:
        assert all(p.grad is not None for p in m.parameters())
    assert opt.modes == ["hebbian", "hebbian", "sgd", "sgd", "sgd"]
    for hook in hooks:
        hook.remove()


# -- selection of T ----------------------------------------------------------------------------
def test_static_schedule_moves_T_as_documented():
    model = small_mlp((10, 9, 8, 7, 6, 5, 3))  # 6 layers
    opt = create_localized_optimizer(
        model,
        selection_mode="static",
        warmup_epochs=2,
        static_interval=2,
        static_step=2,
        min_sgd_layers=2,
    )
    assert opt.cap == 4
    seen = []
    for _ in range(8):
        opt.end_epoch(1.0)
        seen.append(opt.transition)
    # c completed: T = min(4, 2*(floor((c-2)/2)+1)) for c >= 2, else 0
    assert seen == [0, 2, 2, 4, 4, 4, 4, 4]
    capped = create_localized_optimizer(small_mlp(), selection_mode="static", max_transition=1)
    for _ in range(5):
        capped.end_epoch(1.0)
    assert capped.transition == 1 and capped.cap == 1


def nudge(layer: nn.Module, relative: float) -> None:
    """Change ``layer.weight`` by exactly ``relative`` of its norm."""
    with torch.no_grad():
        w = layer.weight
        d = torch.randn_like(w)
        w.add_(d * (relative * w.norm() / d.norm()))


def test_dynamic_moves_T_when_updates_settle_and_not_before():
    torch.manual_seed(5)
    model = small_mlp()  # 4 layers, cap 3
    opt = create_localized_optimizer(model, selection_mode="dynamic", settle_ratio=0.5)
    layers = [m for _, m in opt.layers]
    plan = [  # relative updates of layers 0, 1 per epoch
        (0.20, 0.30),
        (0.15, 0.30),  # 0.75 of peak: not settled -> stay
        (0.11, 0.30),  # 0.55 of peak: not yet
        (0.09, 0.30),  # 0.45 of peak (< 0.5): T 0 -> 1
        (0.01, 0.30),  # layer 1 now transition; 1.0 of its peak: stay
        (0.01, 0.07),  # 0.23 of its peak: two notches -> T 1 -> 3 (cap)
    ]
    seen = []
    for u0, u1 in plan:
        if opt.transition <= 0:
            nudge(layers[0], u0)
        nudge(layers[1], u1)
        opt.end_epoch(1.0)
        seen.append(opt.transition)
    assert seen == [0, 0, 0, 1, 1, 3]
    assert [round(h["update"][0], 6) for h in opt.history[:4]] == [0.2, 0.15, 0.11, 0.09]


def test_dynamic_waits_for_warmup():
    torch.manual_seed(6)
    model = small_mlp()
    opt = create_localized_optimizer(model, warmup_epochs=3)
    first = opt.layers[0][1]
    for u in (0.5, 0.01, 0.01):
        nudge(first, u)
        opt.end_epoch(1.0)
        seen = opt.transition
    assert opt.history[-1]["transition"] == 0 and seen >= 1  # moved only after epoch 3


# -- weak supervision and non-finite policy ----------------------------------------------------
def test_weak_supervision_gate_stops_hebbian_when_loss_rises():
    model = small_mlp()
    opt = create_localized_optimizer(
        model, hebbian_lr=0.5, weak_supervision_weight=0.1, loss_ema_beta=0.0
    )
    opt.set_transition(1)

    def observe(loss: float) -> None:  # the gate takes a loss in when its step is taken
        opt.observe_loss(loss)
        opt.step()

    observe(3.0)
    assert opt.gate == 1.0  # no completed epoch yet: no reference
    opt.end_epoch(1.0)  # L* = 1.0
    observe(0.8)
    assert opt.gate == 1.0
    observe(1.05)
    assert opt.gate == pytest.approx(0.5)
    observe(1.2)
    assert opt.gate == 0.0 and opt.hebbian_rate == 0.0
    x, y = torch.randn(4, 10), torch.randint(0, 3, (4,))
    first = opt.layers[0][1].weight.detach().clone()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()  # gate closed: localized layer untouched
    assert torch.equal(opt.layers[0][1].weight, first)
    observe(0.9)  # loss recovers: full rate again
    assert opt.gate == 1.0
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert not torch.equal(opt.layers[0][1].weight, first)


def test_non_finite_gradient_or_loss_skips_the_whole_step():
    torch.manual_seed(7)
    model = small_mlp()
    opt = create_localized_optimizer(model, lr=0.1, hebbian_lr=0.5, base_kwargs={"momentum": 0.9})
    opt.set_transition(1)
    x, y = torch.randn(4, 10), torch.randint(0, 3, (4,))
    training_step(model, opt, x, y)
    params = [p.detach().clone() for p in model.parameters()]
    base_state = copy.deepcopy(opt.base.state_dict())
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    model[-1].weight.grad[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="step skipped"):
        opt.step()
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    opt.observe_loss(float("inf"))
    loss.backward()
    opt.step()  # the 2nd skip is counted, not warned (warnings at the 1st, 10th, 100th, ...)
    assert opt.last_step_skipped and opt.skipped_steps == 2
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    after = opt.base.state_dict()["state"]
    for k, v in base_state["state"].items():
        assert torch.equal(v["momentum_buffer"], after[k]["momentum_buffer"])
    assert math.isfinite(opt.loss_ema)


# -- state and contract ------------------------------------------------------------------------
def run_steps(model, opt, n, seed):
    for s in range(n):
        x, y = cnn_batch(6, seed=seed + s)
        training_step(model, opt, x, y)


def make(seed=8):
    torch.manual_seed(seed)
    model = small_cnn()
    opt = create_localized_optimizer(
        model, lr=0.05, hebbian_lr=0.05, base_kwargs={"momentum": 0.9}, selection_mode="static"
    )
    return model, opt


def test_state_round_trip_continues_bit_identically():
    model, opt = make()
    run_steps(model, opt, 3, seed=0)
    opt.end_epoch(1.5)
    run_steps(model, opt, 2, seed=10)
    assert opt.transition == 1 and opt.hebbian_steps > 0
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    model2, opt2 = make(seed=99)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.transition == 1 and opt2.modes == opt.modes and opt2.history == opt.history
    assert not model2[0].weight.requires_grad
    for m, o in ((model, opt), (model2, opt2)):
        run_steps(m, o, 3, seed=20)
        o.end_epoch(1.0)
        run_steps(m, o, 2, seed=30)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt.transition == opt2.transition == 2
    assert (opt.gate, opt.loss_ema, opt.hebbian_steps) == (
        opt2.gate,
        opt2.loss_ema,
        opt2.hebbian_steps,
    )


def test_optimizer_contract():
    model, opt = make()
    assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups is opt.base.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = cnn_batch()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and opt.loss_ema == pytest.approx(loss.item())
    sched.step()
    assert opt.base.param_groups[0]["lr"] == pytest.approx(0.025)
    extra = nn.Parameter(torch.zeros(2))
    opt.add_param_group({"params": [extra]})
    assert opt.base.param_groups[-1]["params"][0] is extra
    assert "LocalizedOptimizer(T=0" in repr(opt) and "sgd" in repr(opt)
    clone = copy.deepcopy(opt)
    assert clone.transition == opt.transition and clone.layers[0][1] is not opt.layers[0][1]
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_errors_name_argument_or_layer():
    with pytest.raises(ValueError, match=r"'1'.*BatchNorm2d"):
        find_localizable_layers(
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 2))
        )
    with pytest.raises(ValueError, match="groups"):
        find_localizable_layers(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        find_localizable_layers(nn.Sequential(nn.Linear(2, 2)))
    model = small_mlp()
    with pytest.raises(ValueError, match="selection_mode"):
        create_localized_optimizer(model, selection_mode="sometimes")
    with pytest.raises(ValueError, match="hebbian_lr"):
        create_localized_optimizer(model, hebbian_lr=-1.0)
    with pytest.raises(ValueError, match="hebbian_subsample"):
        create_localized_optimizer(model, hebbian_subsample=0.0)
    with pytest.raises(ValueError, match="min_sgd_layers"):
        create_localized_optimizer(model, min_sgd_layers=9)
    with pytest.raises(TypeError, match="base"):
        LocalizedOptimizer(model, "sgd")
    opt = create_localized_optimizer(model, max_transition=2)
    with pytest.raises(ValueError, match="transition must be in \\[0, 2\\]"):
        opt.set_transition(3)


def test_harness_plugin_records_T_and_resumes(tmp_path, toy):
    from advanced_optimizers.bench.train import RunConfig, train_run

    config = RunConfig(
        "localized-sgd",
        {"selection_mode": "static", "hebbian_lr": 0.01},
        arch="mlp",
        width=32,
        depth=2,
        epochs=3,
        batch_size=64,
    )
    full = train_run(config, toy)
    assert [h["transition"] for h in full.history] == [0.0, 1.0, 2.0]

    assert_interrupted_run_resumes_identically(
        config, toy, full, tmp_path, 2, ("test_loss", "train_loss", "transition", "hebbian_gate")
    )


def test_hebbian_interval_runs_rule_every_kth_step():
    torch.manual_seed(9)
    model = small_mlp()
    opt = create_localized_optimizer(model, hebbian_lr=0.1, hebbian_interval=3)
    opt.set_transition(1)
    x, y = torch.randn(4, 10), torch.randint(0, 3, (4,))
    changed = []
    for _ in range(6):
        before = opt.layers[0][1].weight.detach().clone()
        training_step(model, opt, x, y)
        changed.append(not torch.equal(before, opt.layers[0][1].weight))
    assert changed == [True, False, False, True, False, False] and opt.hebbian_steps == 2


def test_missing_sync_under_distributed_warns_once(monkeypatch):
    """Under torch.distributed, stepping with a pending Hebbian update that was never synced warns
    (each rank would apply its own shard's update and the replicas would drift apart)."""
    import advanced_optimizers.localized.optimizer as local_module

    monkeypatch.setattr(local_module, "is_distributed", lambda group=None: True)
    model, opt = make()
    opt.set_transition(1)
    x, y = cnn_batch()
    with pytest.warns(RuntimeWarning, match="sync_distributed"):
        training_step(model, opt, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training_step(model, opt, x, y)  # warned once only


# -- the plain normalised Hebbian rule (rule="normalized_hebb") ----------------------------------
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_normalized_hebb_terms_match_independent(kind):
    torch.manual_seed(11)
    if kind == "linear":
        layer = nn.Linear(5, 3)
        x = torch.randn(7, 5)
        out = layer(x).detach()
        rows, outs = x, out
    else:
        layer = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        x = torch.randn(2, 2, 7, 6)
        out = layer(x).detach()
        patches = F.unfold(x, 3, padding=1, stride=2)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        outs = out.flatten(2).transpose(1, 2).reshape(-1, out.shape[1])
    numerator, energy = normalized_hebb_terms(layer, x, out)
    want = independent_direction(
        layer.weight.detach(), layer.bias.detach(), rows, outs, decorrelate=False
    )
    torch.testing.assert_close((numerator / energy).double(), want, rtol=1e-4, atol=1e-6)


def test_rule_option_selects_the_rule_and_rejects_others():
    torch.manual_seed(12)
    x, y = torch.randn(6, 10), torch.randint(0, 3, (6,))
    got = {}
    for rule in ("oja_subspace", "normalized_hebb"):
        torch.manual_seed(12)
        model = small_mlp()
        opt = create_localized_optimizer(model, hebbian_lr=0.2, rule=rule, hebbian_subsample=1.0)
        opt.set_transition(1)
        layer = opt.layers[0][1]
        w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
        training_step(model, opt, x, y)
        direction = independent_direction(
            w0, b0, x, x @ w0.t() + b0, decorrelate=rule == "oja_subspace"
        )
        unit = w0.double() / w0.double().norm(dim=1, keepdim=True) + 0.2 * direction
        want = unit / unit.norm(dim=1, keepdim=True) * w0.double().norm(dim=1, keepdim=True)
        torch.testing.assert_close(layer.weight.detach().double(), want, rtol=1e-4, atol=1e-6)
        got[rule] = layer.weight.detach().clone()
        assert f"rule='{rule}'" in repr(opt)
    assert not torch.equal(got["oja_subspace"], got["normalized_hebb"])
    with pytest.raises(ValueError, match="rule"):
        create_localized_optimizer(small_mlp(), rule="hebb")


# -- FreezeOut (the progressive-freezing baseline) and the step-based schedule -------------------
def test_freezeout_times_linear_and_cubic():
    linear = FreezeOutSelection(0.5, "linear").times(5)
    assert linear == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0])
    cubic = FreezeOutSelection(0.512, "cubic").times(5)
    assert cubic == pytest.approx([0.8**3, 0.85**3, 0.9**3, 0.95**3, 1.0])
    with pytest.raises(ValueError, match="t_0"):
        FreezeOutSelection(0.0)
    with pytest.raises(ValueError, match="spacing"):
        FreezeOutSelection(0.5, "squared")


def freezeout_mlp(seed=13, **options):
    torch.manual_seed(seed)
    model = small_mlp((10, 8, 7, 6, 3))  # 4 layers: times 0.25, 0.5, 0.75, 1 (linear, t_0 0.25)
    defaults = dict(lr=0.1, total_steps=8, t_0=0.25, spacing="linear")
    return model, create_freezeout_optimizer(model, **{**defaults, **options})


def test_freezeout_freezes_layers_on_schedule_and_anneals_each_layer():
    model, opt = freezeout_mlp()  # plain SGD: the update is exactly -lr * factor * grad
    assert isinstance(opt, LocalizedOptimizer) and opt.layer_times == [0.25, 0.5, 0.75, 1.0]
    assert len(opt.param_groups) == 4
    x, y = torch.randn(6, 10), torch.randint(0, 3, (6,))
    seen = []
    for step in range(8):
        progress = step / 8
        factors = opt.lr_factors()
        want = []
        for t in opt.layer_times:
            live = progress < t
            want.append(0.5 * (1 + math.cos(math.pi * progress / t)) / t if live else 0.0)
        assert factors == pytest.approx(want)
        before = [m.weight.detach().clone() for _, m in opt.layers]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        grads = [None if m.weight.grad is None else m.weight.grad.clone() for _, m in opt.layers]
        opt.step()
        for i, (_, m) in enumerate(opt.layers):
            if i < seen[-1] if seen else False:
                assert grads[i] is None and torch.equal(m.weight, before[i])
            elif grads[i] is not None:
                expected = before[i] - 0.1 * factors[i] * grads[i]
                torch.testing.assert_close(m.weight.detach(), expected)
        assert [g["lr"] for g in opt.param_groups] == [0.1] * 4  # the base rates are restored
        seen.append(opt.transition)
        assert all(
            not p.requires_grad for _, m in opt.layers[: opt.transition] for p in m.parameters()
        )
    # T after step s = layers with t_i <= s/8: 0.25 -> step 2, 0.5 -> step 4, 0.75 -> step 6, cap 3
    assert seen == [0, 1, 1, 2, 2, 3, 3, 3]
    assert opt.modes == ["frozen", "frozen", "frozen", "sgd"]


def test_freezeout_unscaled_and_cubic_options():
    _, opt = freezeout_mlp(scale_lr=False)
    assert opt.lr_factors() == [1.0] * 4
    _, opt = freezeout_mlp(t_0=0.512, spacing="cubic", total_steps=100)
    assert opt.layer_times == pytest.approx(FreezeOutSelection(0.512).times(4))
    assert opt.lr_factors()[0] == pytest.approx(1 / 0.512)
    opt.steps = 50
    assert opt.lr_factors()[-1] == pytest.approx(0.5)  # t = 1: plain cosine over the run


def test_freezeout_resume_is_bit_identical_across_a_freeze():
    x = [torch.randn(6, 10, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    y = [torch.randint(0, 3, (6,), generator=torch.Generator().manual_seed(s)) for s in range(8)]
    model, opt = freezeout_mlp(base_kwargs={"momentum": 0.9})
    for s in range(8):
        training_step(model, opt, x[s], y[s])
    model2, opt2 = freezeout_mlp(base_kwargs={"momentum": 0.9})
    for s in range(3):
        training_step(model2, opt2, x[s], y[s])
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": opt2.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model3, opt3 = freezeout_mlp(seed=99, base_kwargs={"momentum": 0.9})
    model3.load_state_dict(saved["model"])
    opt3.load_state_dict(saved["opt"])
    assert opt3.transition == 1 and not model3[1].weight.requires_grad
    for s in range(3, 8):
        training_step(model3, opt3, x[s], y[s])
    for a, b in zip(model.parameters(), model3.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt3.transition == opt.transition == 3 and opt3.steps == 8
    with pytest.raises(ValueError, match="'freezeout' optimizer"):
        create_localized_optimizer(small_mlp((10, 8, 7, 6, 3))).load_state_dict(saved["opt"])


def test_freezeout_needs_one_group_per_layer_and_total_steps():
    model = small_mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="own parameter group"):
        FreezeOutOptimizer(model, base, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        create_freezeout_optimizer(model)
    with pytest.raises(ValueError, match="total_steps"):
        create_localized_optimizer(model, selection_mode="freezeout")


def test_localized_freezeout_schedule_moves_T_by_steps_with_the_rule_on():
    torch.manual_seed(14)
    model = small_mlp((10, 8, 7, 6, 3))
    opt = create_localized_optimizer(
        model,
        hebbian_lr=0.1,
        selection_mode="freezeout",
        t_0=0.5,
        spacing="linear",
        total_steps=4,
        max_transition=2,
        warmup_epochs=3,
    )
    assert opt.layer_times == [0.5, 0.75, 1.0, 1.0]  # spaced up to the cap layer
    x, y = torch.randn(6, 10), torch.randint(0, 3, (6,))
    seen = []
    for _ in range(4):
        training_step(model, opt, x, y)
        seen.append(opt.transition)
    opt.end_epoch(1.0)  # the epoch hook keeps the step-based T (and ignores the warm-up)
    assert seen == [0, 1, 2, 2] and opt.transition == 2 and opt.hebbian_steps == 2
    assert opt.modes == ["hebbian", "hebbian", "sgd", "sgd"]


def test_harness_freezeout_method_freezes_and_resumes(tmp_path, toy):
    from advanced_optimizers.bench.train import RunConfig, train_run
    from advanced_optimizers.registry import create_optimizer

    assert isinstance(
        create_optimizer("freezeout-sgd", small_mlp(), total_steps=10), FreezeOutOptimizer
    )
    config = RunConfig(
        "freezeout-sgd",
        {"t_0": 0.3, "spacing": "linear"},
        arch="mlp",
        width=32,
        depth=2,
        epochs=3,
        batch_size=64,
    )
    full = train_run(config, toy)  # 3 layers, 4 steps an epoch: times 0.3, 0.65, 1
    assert [h["transition_next"] for h in full.history] == [1.0, 2.0, 2.0]

    assert_interrupted_run_resumes_identically(
        config, toy, full, tmp_path, 1, ("test_loss", "train_loss", "transition", "transition_next")
    )


class _Interrupt(Exception):
    pass


def assert_interrupted_run_resumes_identically(config, data, full, tmp_path, stop_epoch, keys):
    """A run killed after ``stop_epoch`` and resumed from its checkpoint ends with ``full``'s
    history on ``keys``."""
    from advanced_optimizers.bench.train import train_run

    def stop(record):
        if record["epoch"] == stop_epoch:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_run(config, data, checkpoint=tmp_path / "c", on_epoch=stop)
    resumed = train_run(config, data, checkpoint=tmp_path / "c")
    for a, b in zip(resumed.history, full.history, strict=True):
        assert [a[k] for k in keys] == [b[k] for k in keys]
