"""Behaviour of SigProp (advanced_optimizers.sigprop) and its harness plugin."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F

from advanced_optimizers.sigprop import (
    LOCAL_LOSSES,
    NORMS,
    SigPropCNN,
    SigPropNet,
    create_sigprop_optimizer,
)


def toy(n: int = 48, dim: int = 20, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, dim, generator=g)
    x[:, :classes] += 3.0 * F.one_hot(y, classes)
    return x, y


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# -- exactness against the official per-sample formulation ---------------------------------------
def official_similarity(a, b):
    """The official ``input_target`` similarity: per-position dot products, mean over positions."""
    if a.dim() == 2:
        return a @ b.t()
    return (a.flatten(2).permute(2, 0, 1) @ b.flatten(2).permute(2, 1, 0)).mean(0)


def reference_losses(model, x, y, kind: str, k: int = 6):
    """Official form: per-sample signals t = g(...proj(onehot(y))), B x B similarities; a block's
    fixed stage (the CNN's max-pool with loss_before_pool) runs after its loss, on h and t."""
    onehot = F.one_hot(y, model.num_classes).float()
    t = model.signal(onehot).view(len(y), *model.signal_shape)
    t_in, h = onehot, x
    losses = []
    for index, block in enumerate(model.blocks):
        h = block(h.detach())
        if index > 0:
            t = block(t.detach())
        yy = official_similarity(t_in, t_in)
        s = official_similarity(h, t)
        if kind == "v14":
            losses.append(F.cross_entropy(s, yy.argmax(1)))
        elif kind == "topk":
            target = F.one_hot(yy.topk(k, 1)[1], len(y)).sum(1).clamp(0, 1).float()
            losses.append(torch.sum(-target * F.log_softmax(s, -1), -1).mean())
        else:  # max_all
            # same-class per-sample signals are equal up to rounding (a GEMM or norm kernel may
            # treat rows differently), so their exact ties are compared within rounding here
            target = torch.isclose(yy, yy.max(1, keepdim=True)[0], rtol=1e-5, atol=0).float()
            losses.append(torch.sum(-target * F.log_softmax(s, -1), -1).mean())
        h, t = model.fixed[index](h.detach()), model.fixed[index](t.detach())
        t_in = t.detach()
    return losses


@pytest.mark.parametrize("kind", ["v14", "topk", "max_all"])
def test_class_level_signals_equal_official_per_sample_losses(kind):
    torch.manual_seed(0)
    model = SigPropNet(20, [16, 12, 8], 3, loss=kind, topk=4)
    x, y = toy(24)
    ref = sum(reference_losses(model, x, y, kind, 4))
    ce = F.cross_entropy(model(x), y)
    assert torch.allclose(model.training_loss(x, y), ref + ce, rtol=1e-5, atol=1e-5)


def cnn_toy(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3


@pytest.mark.parametrize("kind", ["v14", "topk", "max_all"])
@pytest.mark.parametrize("before_pool", [True, False])
@pytest.mark.parametrize("norm", NORMS)
def test_cnn_losses_and_gradients_equal_official_per_sample_form(kind, before_pool, norm):
    torch.manual_seed(0)
    model = SigPropCNN(
        (1, 8, 8),
        (4, 6),
        3,
        fc_dims=(8,),
        loss=kind,
        topk=4,
        norm=norm,
        loss_before_pool=before_pool,
    )
    x, y = cnn_toy()
    refs = reference_losses(model, x, y, kind, 4)
    features = model.fixed[-1](model.hidden(x)[-1]).detach()  # the output layer's input is detached
    (sum(refs) + F.cross_entropy(model.output(features), y)).backward()
    expected = grads(model)
    model.zero_grad(set_to_none=True)
    loss = model.training_loss(x, y)
    loss.backward()
    assert torch.allclose(loss, sum(refs) + F.cross_entropy(model(x), y), rtol=1e-5, atol=1e-5)
    got = grads(model)
    assert set(got) == set(expected)
    for name in got:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-6), name


def test_loss_before_pool_is_the_default_and_pool_is_a_fixed_stage():
    before, after = (
        SigPropCNN((1, 8, 8), (4,), 3),
        SigPropCNN((1, 8, 8), (4,), 3, loss_before_pool=False),
    )
    assert before.loss_before_pool and not after.loss_before_pool
    # the same parameters (the pool has none), a separate pool only when the loss comes first
    assert [n for n, _ in before.named_parameters()] == [n for n, _ in after.named_parameters()]
    assert isinstance(before.fixed[1], torch.nn.MaxPool2d)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in after.fixed)
    after.load_state_dict(before.state_dict())  # interchangeable weights, same inference
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(before(x), after(x))
    # a single conv per stage: the first loss sees the full-resolution map only before pooling
    assert before.signal_shape == (4, 8, 8)
    single = SigPropCNN((1, 8, 8), (4,), 3, convs_per_stage=1, loss_before_pool=False)
    assert single.signal_shape == (4, 4, 4)


def test_norm_options_and_batchnorm_refused():
    for norm in NORMS:
        mlp = SigPropNet(20, [8], 3, norm=norm)
        cnn = SigPropCNN((1, 8, 8), (4,), 3, fc_dims=(8,), norm=norm)
        if norm == "none":
            assert len(mlp.blocks[0]) == 2 and len(cnn.blocks[0]) == 2
        else:
            assert isinstance(mlp.blocks[0][1], torch.nn.LayerNorm)
            assert isinstance(cnn.blocks[2][2], torch.nn.LayerNorm)
            expected = torch.nn.GroupNorm if norm == "layer" else torch.nn.InstanceNorm2d
            assert isinstance(cnn.blocks[0][1], expected)
    for bad in ("batch", "batch_norm"):
        with pytest.raises(ValueError, match="batch statistics would mix the class signals"):
            SigPropNet(20, [8], 3, norm=bad)
        with pytest.raises(ValueError, match="BatchNorm"):
            SigPropCNN((1, 8, 8), (4,), 3, norm=bad)
    with pytest.raises(ValueError, match="norm must be one of"):
        SigPropNet(20, [8], 3, norm="group")
    with pytest.raises(ValueError, match="loss_before_pool"):
        SigPropCNN((1, 8, 8), (4,), 3, loss_before_pool="yes")


@pytest.mark.parametrize("norm", ["layer", "instance"])
def test_mlp_norm_keeps_class_level_signals_exact(norm):
    torch.manual_seed(0)
    model = SigPropNet(20, [16, 12], 3, norm=norm)
    x, y = toy(24)
    ref = sum(reference_losses(model, x, y, "v14"))
    ce = F.cross_entropy(model(x), y)
    assert torch.allclose(model.training_loss(x, y), ref + ce, rtol=1e-5, atol=1e-5)


# -- locality: no gradient crosses a layer ---------------------------------------------------------
def test_each_layer_gradient_is_its_own_local_loss_gradient():
    torch.manual_seed(0)
    model = SigPropNet(20, [16, 12, 8], 3)
    x, y = toy(24)
    model.training_loss(x, y).backward()
    full = grads(model)
    for index, loss in enumerate(reference_losses(model, x, y, "v14")):
        model.zero_grad(set_to_none=True)
        loss.backward()
        own = [n for n, _ in model.named_parameters() if n.startswith(f"blocks.{index}.")]
        if index == 0:
            own += [n for n, _ in model.named_parameters() if n.startswith("signal.")]
        alone = grads(model)
        assert set(alone) == set(own)  # the loss of layer k reaches only layer k (+ projection)
        for name in own:
            assert torch.allclose(full[name], alone[name], atol=1e-6)


def test_perturbing_layer_k_loss_changes_no_gradient_below_k():
    torch.manual_seed(0)
    model = SigPropNet(20, [16, 12, 8], 3)
    x, y = toy(24)
    model.training_loss(x, y).backward()
    before = grads(model)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():  # change layer 2 (index 2): only its and later gradients may change
        model.blocks[2][0].weight.mul_(3.0)
    model.training_loss(x, y).backward()
    after = grads(model)
    for name in before:
        if name.startswith(("blocks.0.", "blocks.1.", "signal.")):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["blocks.2.0.weight"], after["blocks.2.0.weight"])


@pytest.mark.parametrize("kind", LOCAL_LOSSES)
def test_layerwise_backward_gives_same_value_and_gradients(kind):
    torch.manual_seed(0)
    model = SigPropNet(20, [16, 12], 3, loss=kind)
    x, y = toy(24)
    one = model.training_loss(x, y)
    one.backward()
    g_one = grads(model)
    model.zero_grad(set_to_none=True)
    eager = model.training_loss(x, y, layerwise_backward=True)
    eager.backward()
    assert torch.allclose(one, eager)
    for name, g in grads(model).items():
        assert torch.allclose(g_one[name], g, atol=1e-6)


@pytest.mark.parametrize("before_pool", [True, False])
def test_cnn_locality_and_signal_shapes(before_pool):
    torch.manual_seed(0)
    model = SigPropCNN((1, 8, 8), (4, 8), 3, fc_dims=(16,), loss_before_pool=before_pool)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    model.training_loss(x, y).backward()
    first = model.blocks[0][0].weight.grad.clone()
    model.zero_grad()
    with torch.no_grad():
        model.blocks[3][0].weight.mul_(-2.0)
    model.training_loss(x, y).backward()
    assert torch.equal(first, model.blocks[0][0].weight.grad)
    shapes = [tuple(t.shape) for t in model.class_signals()]
    if before_pool:  # where each local loss is taken: the second conv of a stage before its pool
        assert shapes == [(3, 4, 8, 8), (3, 4, 8, 8), (3, 8, 4, 4), (3, 8, 4, 4), (3, 16)]
    else:
        assert shapes == [(3, 4, 8, 8), (3, 4, 4, 4), (3, 8, 4, 4), (3, 8, 2, 2), (3, 16)]
    assert [tuple(h.shape[1:]) for h in model.hidden(x)] == [s[1:] for s in shapes]


# -- learning and inference ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["v14", "topk", "max_all"])
def test_training_beats_chance_and_inference_needs_no_label(kind):
    torch.manual_seed(0)
    model = SigPropNet(20, [32, 32], 3, loss=kind)
    opt = create_sigprop_optimizer(model, lr=3e-3, signal_lr=3e-3)
    x, y = toy(240)
    xt, yt = toy(300, seed=1)
    for _ in range(4):
        for i in range(0, 240, 24):
            opt.zero_grad()
            model.training_loss(x[i : i + 24], y[i : i + 24], layerwise_backward=True).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc_out = (model(xt).argmax(1) == yt).float().mean().item()
        acc_sig = (model.predict_by_signal(xt).argmax(1) == yt).float().mean().item()
    assert acc_out > 0.8, acc_out  # chance is 1/3
    assert acc_sig > 0.8, acc_sig


def test_cnn_trains_on_small_problem():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.randn(64, 1, 8, 8, generator=g) * 0.3
    x[y == 1, :, :4] += 1.0
    model = SigPropCNN((1, 8, 8), (4,), 2, fc_dims=(8,))
    opt = create_sigprop_optimizer(model, lr=1e-2, signal_lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        model.training_loss(x, y).backward()
        opt.step()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    model = SigPropNet(20, [8], 3)
    x, y = toy(6)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 2\]"):
        model.training_loss(x, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="y must have shape"):
        model.training_loss(x, y[:5])
    with pytest.raises(TypeError, match="y must be an integer tensor"):
        model.training_loss(x, y.float())
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(6, 21))
    with pytest.raises(ValueError, match="hidden_dims must contain"):
        SigPropNet(20, [], 3)
    with pytest.raises(ValueError, match="hidden_dims entries"):
        SigPropNet(20, [8, 0], 3)
    with pytest.raises(ValueError, match="loss must be one of"):
        SigPropNet(20, [8], 3, loss="mse")
    with pytest.raises(ValueError, match="divisible by 4"):
        SigPropCNN((1, 6, 6), (4, 8), 3)
    with pytest.raises(ValueError, match="x must have shape"):
        SigPropCNN((1, 8, 8), (4,), 3)(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="signal_lr"):
        create_sigprop_optimizer(model, signal_lr=0.0)
    with pytest.raises(ValueError, match="fixed must have one entry per block"):
        from advanced_optimizers.sigprop import SigPropBase

        SigPropBase([torch.nn.Linear(2, 2)], torch.nn.Linear(2, 2), (2,), 2, "v14", 1, True, [])
    with pytest.raises(TypeError, match="model must be"):
        create_sigprop_optimizer(torch.nn.Linear(2, 2))


# -- optimizer contract ---------------------------------------------------------------------------
def train_steps(model, opt, n, seed=0):
    x, y = toy(24 * n, seed=seed)
    for i in range(n):
        opt.zero_grad()
        model.training_loss(x[24 * i : 24 * i + 24], y[24 * i : 24 * i + 24], True).backward()
        opt.step()


def test_state_round_trip_continues_identically():
    torch.manual_seed(0)
    model = SigPropNet(20, [16, 12], 3)
    opt = create_sigprop_optimizer(model)
    train_steps(model, opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    reference = copy.deepcopy((model, opt))
    train_steps(*reference, 3, seed=1)

    torch.manual_seed(1)
    restored = SigPropNet(20, [16, 12], 3)
    ropt = create_sigprop_optimizer(restored)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored.load_state_dict(state["model"])
    ropt.load_state_dict(state["opt"])
    train_steps(restored, ropt, 3, seed=1)
    for a, b in zip(reference[0].parameters(), restored.parameters(), strict=True):
        assert torch.equal(a, b)


def test_param_groups_step_closure_and_scheduler():
    model = SigPropNet(20, [8], 3)
    opt = create_sigprop_optimizer(model, lr=1e-3, signal_lr=1e-4)
    assert [g["name"] for g in opt.param_groups] == ["layers", "signal"]
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4]
    x, y = toy(6)

    def closure():
        opt.zero_grad()
        loss = model.training_loss(x, y)
        loss.backward()
        return loss

    scheduler = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    assert torch.is_tensor(opt.step(closure))
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-5]
    assert "SigPropAdam" in repr(opt) and "SigPropNet" in repr(model)


def test_signal_lr_none_is_the_official_single_learning_rate():
    import inspect

    model = SigPropNet(20, [8], 3)
    # the seed API keeps its signature and defaults
    params = inspect.signature(create_sigprop_optimizer).parameters
    assert [params["lr"].default, params["signal_lr"].default] == [1e-3, 1e-4]
    opt = create_sigprop_optimizer(model, lr=3e-3, signal_lr=None)
    assert [g["lr"] for g in opt.param_groups] == [3e-3, 3e-3]


def test_nonfinite_gradient_skips_step_and_keeps_state_finite():
    torch.manual_seed(0)
    model = SigPropNet(20, [8], 3)
    opt = create_sigprop_optimizer(model)
    train_steps(model, opt, 1)
    before = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    x, y = toy(6)
    opt.zero_grad()
    model.training_loss(x, y).backward()
    model.blocks[0][0].weight.grad[0, 0] = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    assert any("non-finite" in str(w.message) for w in caught)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    after = opt.state_dict()
    for key, value in state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, after["state"][key][name])
    assert opt.skipped_steps == 1


# -- harness plugin -------------------------------------------------------------------------------
def test_plugin_builds_same_layer_sizes():
    from advanced_optimizers.bench.methods import get_method
    from advanced_optimizers.bench.models import ModelSpec

    method = get_method("sigprop-adam")
    for spec in (ModelSpec("mlp", (1, 8, 8), 3, 16, 3), ModelSpec("cnn", (1, 8, 8), 3, 4, 2)):
        model = method.build_model(spec)
        backprop = spec.build()
        sizes = [p.shape for n, p in model.named_parameters() if not n.startswith("signal.")]
        assert sizes == [p.shape for p in backprop.parameters()]
    with pytest.raises(ValueError, match="loss must be one of"):
        get_method("sigprop-adam", loss="nope")
    with pytest.raises(ValueError, match="BatchNorm"):
        get_method("sigprop-adam", norm="batch")


def test_plugin_defaults_are_the_official_choices_and_options_reach_the_model():
    from advanced_optimizers.bench.methods import Setup, get_method
    from advanced_optimizers.bench.models import ModelSpec

    setup = Setup(lr=2e-3, epochs=1, steps_per_epoch=1, n_train=8, num_classes=3)
    spec = ModelSpec("cnn", (1, 8, 8), 3, 4, 2)
    method = get_method("sigprop-adam")
    assert method.options["signal_lr"] is None and method.options["norm"] == "none"
    model = method.build_model(spec)
    assert model.loss_before_pool
    assert [g["lr"] for g in method.build_optimizer(model, setup).param_groups] == [2e-3, 2e-3]
    ours = get_method("sigprop-adam", signal_lr=2e-4, loss_before_pool=False, norm="instance")
    model = ours.build_model(spec)
    assert not model.loss_before_pool and model.norm == "instance"
    assert [g["lr"] for g in ours.build_optimizer(model, setup).param_groups] == [2e-3, 2e-4]
    mlp = get_method("sigprop-adam", norm="layer").build_model(
        ModelSpec("mlp", (1, 8, 8), 3, 16, 2)
    )
    assert isinstance(mlp.blocks[1][1], torch.nn.LayerNorm)
