"""μP reliability: each test protects one behaviour that was wrong before (named after it)."""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advanced_optimizers.mup import (
    MuPAdam,
    MuPSGD,
    apply_mup_init,
    classify_parameters,
    create_mu_transfer_optimizer,
    mup_factors,
)

torch.set_num_threads(1)


def roles(model: nn.Module, base: int, target: int) -> dict[str, str]:
    infos = classify_parameters(
        model, base_model_config={"width": base}, target_model_config={"width": target}
    )
    return {i.name: i.role for i in infos}


def mlp(width: int, n_in: int = 8, n_out: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, n_out),
    )


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, n_in: int = 8) -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(16, n_in, generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), (x[:, 0] > 0).long()).backward()
        opt.step()


# ------------------------------------------------------------------ 1. width configs
def test_config_input_dim_that_is_a_multiple_of_the_width_is_not_wide():
    cifar = nn.Sequential(
        nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )
    assert roles(cifar, 64, 512) == {
        "0.weight": "input",
        "0.bias": "vector",
        "2.weight": "hidden",
        "2.bias": "vector",
        "4.weight": "output",
        "4.bias": "fixed",
    }
    mnist = nn.Sequential(nn.Flatten(), nn.Linear(784, 112), nn.ReLU(), nn.Linear(112, 10))
    assert roles(mnist, 16, 112)["1.weight"] == "input"
    opt = create_mu_transfer_optimizer(mnist, {"width": 16}, {"width": 112}, {"lr": 1e-3})
    first = next(g for g in opt.param_groups if any(p is mnist[1].weight for p in g["params"]))
    assert first["lr"] == pytest.approx(1e-3)  # input: LR x1, not x1/7


class Block(nn.Module):
    """A transformer-style block: MLP expansion 4w, fused attention projection 3w, LM head."""

    def __init__(self, width: int, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attn = nn.MultiheadAttention(width, 2)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.head = nn.Linear(width, vocab)


def test_config_width_multiples_computed_from_the_width_stay_wide():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nn.MultiheadAttention's 1/sqrt(d) warning
        got = roles(Block(64, vocab=64 * 8), 16, 64)  # vocab a multiple of the width too
    assert got["up.weight"] == got["down.weight"] == "hidden"
    assert got["up.bias"] == got["attn.in_proj_bias"] == "vector"
    assert got["attn.in_proj_weight"] == "hidden"
    assert got["embed.weight"] == "input" and got["head.weight"] == "output"

    def convnet(w: int) -> nn.Sequential:  # w channels flattened (x4) into the readout
        return nn.Sequential(nn.Conv2d(3, w, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * w, 5))

    assert roles(convnet(32), 8, 32) == {
        "0.weight": "input",
        "0.bias": "vector",
        "3.weight": "output",
        "3.bias": "fixed",
    }


# ------------------------------------------------------------------ 2. init rescaled once
def test_deepcopy_of_a_rescaled_model_is_not_rescaled_again():
    torch.manual_seed(0)
    model = mlp(64)
    create_mu_transfer_optimizer(model, {"width": 16}, {"width": 64}, {"lr": 0.1})
    clone = copy.deepcopy(model)
    create_mu_transfer_optimizer(clone, {"width": 16}, {"width": 64}, {"lr": 0.1})
    assert all(
        torch.equal(p, q) for p, q in zip(model.parameters(), clone.parameters(), strict=True)
    )
    # a model built afresh is rescaled (the marker belongs to the parameter objects)
    torch.manual_seed(0)
    fresh = mlp(64)
    reference = copy.deepcopy(fresh)
    create_mu_transfer_optimizer(fresh, {"width": 16}, {"width": 64}, {"lr": 0.1})
    assert torch.allclose(fresh[4].weight, reference[4].weight / 2)


def test_rescale_mark_survives_pickling_and_does_not_keep_parameters_alive():
    import gc
    import weakref

    model = mlp(64)
    create_mu_transfer_optimizer(model, {"width": 16}, {"width": 64}, {"lr": 0.1})
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    before = loaded[4].weight.detach().clone()
    create_mu_transfer_optimizer(loaded, {"width": 16}, {"width": 64}, {"lr": 0.1})
    assert torch.equal(loaded[4].weight, before)  # a whole-model pickle keeps the mark
    old = weakref.ref(model[4].weight)
    model[4].weight = nn.Parameter(torch.zeros(3, 64))  # as FSDP replaces parameters
    gc.collect()
    assert old() is None


def test_loading_a_checkpoint_into_a_rescaled_model_does_not_rearm_the_rescale():
    torch.manual_seed(0)
    model = mlp(64)
    opt = create_mu_transfer_optimizer(model, {"width": 16}, {"width": 64}, {"lr": 0.1})
    train(model, opt, 2)
    saved = copy.deepcopy(model.state_dict())
    other = mlp(64)
    create_mu_transfer_optimizer(other, {"width": 16}, {"width": 64}, {"lr": 0.1})
    other.load_state_dict(saved)  # usual order: build, create (rescale), load
    create_mu_transfer_optimizer(other, {"width": 16}, {"width": 64}, {"lr": 0.1})
    assert all(torch.equal(other.state_dict()[k], v) for k, v in saved.items())


def test_checkpoint_loaded_before_the_rescale_is_reported_not_rescaled_twice_silently():
    torch.manual_seed(0)
    model = mlp(64)
    opt = create_mu_transfer_optimizer(model, {"width": 16}, {"width": 64}, {"lr": 0.1})
    train(model, opt, 2)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    wrong = mlp(64)
    wrong.load_state_dict(state["model"])  # loaded first: create() would rescale it again
    opt2 = create_mu_transfer_optimizer(wrong, {"width": 16}, {"width": 64}, {"lr": 0.1})
    opt2.load_state_dict(state["opt"])
    with pytest.raises(RuntimeError, match="rescale_init=False"):
        train(wrong, opt2, 1)

    right = mlp(64)
    right.load_state_dict(state["model"])
    opt3 = create_mu_transfer_optimizer(
        right, {"width": 16}, {"width": 64}, {"lr": 0.1}, rescale_init=False
    )
    opt3.load_state_dict(state["opt"])
    assert all(torch.equal(right.state_dict()[k], v) for k, v in state["model"].items())
    train(right, opt3, 1)  # and the documented resume order passes the check
    later = mlp(64)
    opt4 = create_mu_transfer_optimizer(later, {"width": 16}, {"width": 64}, {"lr": 0.1})
    opt4.load_state_dict(state["opt"])  # optimizer first, model second: also fine
    later.load_state_dict(state["model"])
    train(later, opt4, 1)


def test_rescaling_again_with_other_factors_is_refused():
    model = mlp(64)
    infos = classify_parameters(
        model, base_model_config={"width": 16}, target_model_config={"width": 64}
    )
    apply_mup_init(model, infos)
    with pytest.raises(ValueError, match=r"4\.weight.*already rescaled"):
        apply_mup_init(model, infos, readout_zero_init=True)


# ------------------------------------------------------------------ 3. readout bias
def test_readout_zero_init_zeroes_the_readout_bias():
    model = mlp(64)
    create_mu_transfer_optimizer(
        model, {"width": 16}, {"width": 64}, {"lr": 0.1}, readout_zero_init=True
    )
    assert torch.count_nonzero(model[4].weight) == 0
    assert torch.count_nonzero(model[4].bias) == 0
    assert torch.count_nonzero(model[2].bias) > 0  # other biases keep their init


# ------------------------------------------------------------------ 4. transposed convs
def deconv(w: int) -> nn.Sequential:
    """In 3 → w channels (input role) and w → 3 (readout): in/out widths differ."""
    return nn.Sequential(
        nn.ConvTranspose2d(3, w, 2), nn.ReLU(), nn.Conv2d(w, w, 1), nn.ConvTranspose2d(w, 3, 2)
    )


def test_transposed_conv_init_uses_torchs_fan_of_its_weight():
    # torch inits a ConvTranspose weight (in, out/groups, k...) with fan_in = out/groups * k (dim 1),
    # while its forward sums over dim 0: μP's fan-in. The rescale must undo torch's width dependence.
    stds: dict[int, dict[str, float]] = {}
    for width in (8, 128):
        torch.manual_seed(0)
        model = deconv(width)
        create_mu_transfer_optimizer(model, base_model=deconv(8), base_hyperparams={"lr": 0.1})
        stds[width] = {n: p.std().item() for n, p in model.named_parameters()}
    m = 16
    assert stds[8]["0.weight"] / stds[128]["0.weight"] == pytest.approx(1.0, rel=0.1)  # input
    assert stds[8]["0.bias"] / stds[128]["0.bias"] == pytest.approx(1.0, rel=0.35)  # its bias
    assert stds[8]["3.weight"] / stds[128]["3.weight"] == pytest.approx(m, rel=0.1)  # 1/fan_in
    infos = {i.name: i for i in classify_parameters(deconv(128), base_model=deconv(8))}
    assert infos["0.weight"].role == "input" and infos["3.weight"].role == "output"
    assert mup_factors(infos["3.weight"], "adam").lr == pytest.approx(1 / m)  # fan-in: dim 0


# ------------------------------------------------------------------ 5. roles keys
def test_misspelt_roles_key_is_refused():
    with pytest.raises(ValueError, match=r"roles key '4\.wieght'.*0\.weight"):
        create_mu_transfer_optimizer(
            mlp(64), {"width": 16}, {"width": 64}, {"lr": 0.1}, roles={"4.wieght": "output"}
        )
    with pytest.raises(ValueError, match=r"roles key 'head\.\*'"):
        classify_parameters(
            mlp(64),
            base_model_config={"width": 16},
            target_model_config={"width": 64},
            roles={"head.*": "output"},
        )


# ------------------------------------------------------------------ 6. hyperparameters
@pytest.mark.parametrize(
    ("optimizer", "hyper", "exc", "words"),
    [
        (
            "sgd",
            {"momentum": math.nan},
            ValueError,
            r"base_hyperparams\['momentum'\].*\[0.*1\).*nan",
        ),
        ("sgd", {"momentum": 1.0}, ValueError, r"base_hyperparams\['momentum'\].*got 1.0"),
        ("sgd", {"momentum": "0.9"}, TypeError, r"base_hyperparams\['momentum'\].*str"),
        ("sgd", {"dampening": math.nan}, ValueError, r"base_hyperparams\['dampening'\]"),
        ("sgd", {"lr": math.inf}, ValueError, r"base_hyperparams\['lr'\].*> 0.*inf"),
        ("sgd", {"lr": "0.1"}, TypeError, r"base_hyperparams\['lr'\].*str"),
        ("adamw", {"eps": 0.0}, ValueError, r"base_hyperparams\['eps'\].*> 0.*got 0.0"),
        ("adamw", {"betas": (0.9, 1.0)}, ValueError, r"base_hyperparams\['betas'\]\[1\].*1.0"),
        ("adamw", {"betas": (math.nan, 0.9)}, ValueError, r"base_hyperparams\['betas'\]\[0\]"),
        ("adamw", {"betas": 0.9}, TypeError, r"base_hyperparams\['betas'\].*pair"),
        ("adamw", {"weight_decay": math.nan}, ValueError, r"base_hyperparams\['weight_decay'\]"),
    ],
)
def test_nonfinite_or_mistyped_hyperparameters_are_refused_at_construction(
    optimizer, hyper, exc, words
):
    with pytest.raises(exc, match=words):
        create_mu_transfer_optimizer(
            mlp(64), {"width": 16}, {"width": 64}, {"lr": 0.1, **hyper}, optimizer=optimizer
        )


def test_optimizer_classes_refuse_nonfinite_hyperparameters_too():
    with pytest.raises(ValueError, match=r"momentum.*nan"):
        MuPSGD(mlp(8).parameters(), lr=0.1, momentum=math.nan)
    with pytest.raises(ValueError, match=r"eps.*0.0"):
        MuPAdam(mlp(8).parameters(), lr=0.1, eps=0.0)


# ------------------------------------------------------------------ 7. the seed call
def test_seed_call_on_a_plain_mlp_warns_and_transfers_width():
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(784, 512), nn.ReLU()]
    for _ in range(10):
        layers += [nn.Linear(512, 512), nn.ReLU()]
    large_model = nn.Sequential(*layers, nn.Linear(512, 10))
    with pytest.warns(UserWarning, match=r"DepthScaledResidual.*width only"):
        opt = create_mu_transfer_optimizer(
            large_model,
            base_model_config={"width": 64, "depth": 4},
            target_model_config={"width": 512, "depth": 12},
            base_hyperparams={"lr": 0.001, "weight_decay": 0.01},
        )
    lrs = {g["mup_role"]: g["lr"] for g in opt.param_groups}
    assert lrs["input"] == pytest.approx(1e-3)
    assert lrs["hidden"] == pytest.approx(1e-3 / 8) and lrs["output"] == pytest.approx(1e-3 / 8)
    x = torch.randn(4, 1, 28, 28)
    F.cross_entropy(large_model(x), torch.arange(4)).backward()
    opt.step()


# ------------------------------------------------------------------ 8. state of another size
def test_loading_a_state_saved_for_another_width_fails_at_load():
    small, large = mlp(32), mlp(64)
    opt_small = create_mu_transfer_optimizer(small, {"width": 16}, {"width": 32}, {"lr": 0.1})
    train(small, opt_small, 1)
    opt_large = create_mu_transfer_optimizer(large, {"width": 16}, {"width": 64}, {"lr": 0.1})
    with pytest.raises(ValueError, match="another model"):
        opt_large.load_state_dict(opt_small.state_dict())
    train(large, opt_large, 1)  # nothing was loaded: the optimizer still works


def test_loading_a_state_with_other_mup_roles_fails_at_load():
    model = mlp(64)
    opt = create_mu_transfer_optimizer(model, {"width": 16}, {"width": 64}, {"lr": 0.1})
    state = opt.state_dict()
    state["param_groups"][0] = {**state["param_groups"][0], "mup_role": "output"}
    with pytest.raises(ValueError, match="mup_role"):
        opt.load_state_dict(state)
