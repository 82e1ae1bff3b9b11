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
def reference_losses(model: SigPropNet, x, y, kind: str, k: int = 6):
    """Official form: per-sample signals t = g(...proj(onehot(y))), B x B similarities."""
    onehot = F.one_hot(y, model.num_classes).float()
    t, t_in, h = model.signal(onehot), onehot, x
    losses = []
    for index, block in enumerate(model.blocks):
        h = block(h.detach())
        if index > 0:
            t = block(t.detach())
        yy = t_in @ t_in.t()
        s = h @ t.t()
        if kind == "v14":
            losses.append(F.cross_entropy(s, yy.argmax(1)))
        elif kind == "topk":
            target = F.one_hot(yy.topk(k, 1)[1], len(y)).sum(1).clamp(0, 1).float()
            losses.append(torch.sum(-target * F.log_softmax(s, -1), -1).mean())
        else:  # max_all
            target = (yy == yy.max(1, keepdim=True)[0]).float()
            losses.append(torch.sum(-target * F.log_softmax(s, -1), -1).mean())
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


def test_cnn_locality_and_signal_shapes():
    torch.manual_seed(0)
    model = SigPropCNN((1, 8, 8), (4, 8), 3, fc_dims=(16,))
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    model.training_loss(x, y).backward()
    first = model.blocks[0][0].weight.grad.clone()
    model.zero_grad()
    with torch.no_grad():
        model.blocks[3][0].weight.mul_(-2.0)
    model.training_loss(x, y).backward()
    assert torch.equal(first, model.blocks[0][0].weight.grad)
    shapes = [tuple(t.shape) for t in model.class_signals()]
    assert shapes == [(3, 4, 8, 8), (3, 4, 4, 4), (3, 8, 4, 4), (3, 8, 2, 2), (3, 16)]


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
