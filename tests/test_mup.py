"""μP / μTransfer: the parametrization table, identity with SP at multiplier 1, coordinate check,
checkpoints, wrappers, schedulers, guards, the harness method and the study commands."""

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
    AmbiguousParameterError,
    DepthScaledResidual,
    MuPAdam,
    MuPAdamW,
    MuPSGD,
    apply_mup_init,
    check_lr_ratios,
    classify_parameters,
    create_mu_transfer_optimizer,
    describe_parametrization,
    mup_attention_scale,
    mup_group_lrs,
    mup_scaled_dot_product_attention,
    residual_mlp,
)

torch.set_num_threads(1)


def mlp(width: int, n_in: int = 8, n_out: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.LayerNorm(width),
        nn.ReLU(),
        nn.Linear(width, n_out),
    )


def data(n: int = 16, n_in: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    for i in range(steps):
        x, y = data(seed=seed + i)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def same_params(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def role_of(opt: torch.optim.Optimizer) -> dict[int, dict]:
    return {id(p): g for g in opt.param_groups for p in g["params"]}


# ------------------------------------------------------------------ identity with SP at m = 1
@pytest.mark.parametrize(
    ("kind", "torch_cls", "extra"),
    [
        ("adamw", torch.optim.AdamW, {"weight_decay": 0.01}),
        ("adam", torch.optim.Adam, {}),
        ("sgd", torch.optim.SGD, {"weight_decay": 1e-3, "momentum": 0.9}),
    ],
)
def test_multiplier_one_is_exactly_standard_parametrization(kind, torch_cls, extra):
    torch.manual_seed(0)
    mu_model = residual_mlp(8, 32, 3, 3)
    sp_model = copy.deepcopy(mu_model)
    opt = create_mu_transfer_optimizer(
        mu_model,
        {"width": 32, "depth": 3},
        {"width": 32, "depth": 3},
        {"lr": 0.01, **extra},
        optimizer=kind,
    )
    assert same_params(mu_model, sp_model)  # init untouched
    sp_opt = torch_cls(sp_model.parameters(), lr=0.01, **extra)
    train(mu_model, opt, 5)
    train(sp_model, sp_opt, 5)
    assert same_params(mu_model, sp_model)  # bit-identical training


# ------------------------------------------------------------------ the table
BASE, WIDE = 16, 64  # m = 4


def classified(model: nn.Module) -> dict[str, str]:
    infos = classify_parameters(model, base_model=mlp(BASE))
    return {i.name: i.role for i in infos}


def test_roles_from_base_model_and_from_config_agree():
    model = mlp(WIDE)
    from_base = classified(model)
    from_cfg = {
        i.name: i.role
        for i in classify_parameters(
            model, base_model_config={"width": BASE}, target_model_config={"width": WIDE}
        )
    }
    assert (
        from_base
        == from_cfg
        == {
            "0.weight": "input",
            "0.bias": "vector",
            "2.weight": "hidden",
            "2.bias": "vector",
            "3.weight": "vector",
            "3.bias": "vector",
            "5.weight": "output",
            "5.bias": "fixed",
        }
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [  # lr factor per parameter for m = 4 (the table in mup_factors' docstring)
        (
            "adamw",
            {
                "0.weight": 1,
                "0.bias": 1,
                "2.weight": 1 / 4,
                "3.weight": 1,
                "5.weight": 1 / 4,
                "5.bias": 1,
            },
        ),
        (
            "sgd",
            {
                "0.weight": 4,
                "0.bias": 4,
                "2.weight": 1,
                "3.weight": 4,
                "5.weight": 1 / 4,
                "5.bias": 1,
            },
        ),
    ],
)
def test_learning_rate_and_weight_decay_follow_the_table(kind, expected):
    model = mlp(WIDE)
    opt = create_mu_transfer_optimizer(
        model,
        base_model=mlp(BASE),
        base_hyperparams={"lr": 0.1, "weight_decay": 0.01},
        optimizer=kind,
    )
    groups = role_of(opt)
    for name, p in model.named_parameters():
        if name in expected:
            g = groups[id(p)]
            assert g["lr"] == pytest.approx(0.1 * expected[name])
            assert g["lr"] * g["weight_decay"] == pytest.approx(0.1 * 0.01)  # per-step decay kept
    assert check_lr_ratios(opt)


def test_adam_eps_scales_like_the_gradient():
    model = mlp(WIDE)
    opt = create_mu_transfer_optimizer(
        model, base_model=mlp(BASE), base_hyperparams={"lr": 0.1, "eps": 1e-6}, optimizer="adam"
    )
    groups = role_of(opt)
    named = dict(model.named_parameters())
    assert groups[id(named["2.weight"])]["eps"] == pytest.approx(1e-6 / 4)
    assert groups[id(named["0.weight"])]["eps"] == pytest.approx(1e-6 / 4)
    assert groups[id(named["5.weight"])]["eps"] == pytest.approx(1e-6)
    off = create_mu_transfer_optimizer(
        mlp(WIDE), base_model=mlp(BASE), base_hyperparams={"lr": 0.1, "eps": 1e-6}, scale_eps=False
    )
    assert {g["eps"] for g in off.param_groups} == {1e-6}


def test_init_scale_follows_the_table():
    torch.manual_seed(1)
    model = mlp(WIDE)
    reference = copy.deepcopy(model)
    create_mu_transfer_optimizer(model, base_model=mlp(BASE), base_hyperparams={"lr": 0.1})
    ratio = {
        name: (p / q).nanmean().item()
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True)
    }
    assert ratio["0.weight"] == pytest.approx(1.0)  # input
    assert ratio["0.bias"] == pytest.approx(1.0)  # bias of a layer with finite fan-in
    assert ratio["2.weight"] == pytest.approx(1.0)  # hidden: PyTorch's 1/sqrt(fan_in) already
    assert ratio["2.bias"] == pytest.approx(2.0)  # sqrt(m): width-constant bias init
    assert ratio["5.weight"] == pytest.approx(0.5)  # readout: extra 1/sqrt(m)
    assert ratio["5.bias"] == pytest.approx(2.0)
    # a second call does not rescale again
    create_mu_transfer_optimizer(model, base_model=mlp(BASE), base_hyperparams={"lr": 0.1})
    assert torch.allclose(model[5].weight, 0.5 * reference[5].weight)
    zero = mlp(WIDE)
    create_mu_transfer_optimizer(
        zero, base_model=mlp(BASE), base_hyperparams={"lr": 0.1}, readout_zero_init=True
    )
    assert torch.count_nonzero(zero[5].weight) == 0


def test_readout_std_scales_like_one_over_fan_in():
    stds = []
    for width in (64, 1024):
        torch.manual_seed(0)
        model = mlp(width)
        create_mu_transfer_optimizer(model, {"width": 64}, {"width": width}, {"lr": 0.1})
        stds.append(model[5].weight.std().item())
    assert stds[0] / stds[1] == pytest.approx(16.0, rel=0.15)  # 1/fan_in, not 1/sqrt(fan_in)


# ------------------------------------------------------------------ coordinate check
def coord_ratios(parametrization: str) -> dict[str, list[float]]:
    """Per layer, mean |output| at width 512 over width 32, after 1, 2, 3 Adam steps at lr 0.02."""
    from advanced_optimizers.bench.mup_study import coord_check

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    rows = coord_check(
        [32, 128, 512], x, y, parametrization=parametrization, lr=0.02, steps=3, base_width=32
    )
    l1 = {(r["layer"], r["step"], r["width"]): r["l1"] for r in rows}
    layers = sorted({r["layer"] for r in rows})
    return {
        layer: [l1[layer, step, 512] / l1[layer, step, 32] for step in (1, 2, 3)]
        for layer in layers
    }


def test_coordinate_check_flat_under_mup_and_growing_under_sp():
    mup, sp = coord_ratios("mup"), coord_ratios("sp")
    assert set(mup) == {"1:Linear", "3:Linear", "5:Linear"}
    assert all(0.5 < r < 2.0 for ratios in mup.values() for r in ratios), mup
    assert max(sp["5:Linear"]) > 8.0, sp  # logits blow up with width under SP
    assert max(sp["3:Linear"]) > 3.0, sp  # and so does the hidden pre-activation


# ------------------------------------------------------------------ classification errors
class TiedLM(nn.Module):
    def __init__(self, width: int, vocab: int = 11) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.relu(self.mix(self.embed(tokens))))


def test_embedding_is_an_input_and_tied_weights_ask_which_role():
    untied = TiedLM(64)
    untied.head.weight = nn.Parameter(torch.randn(11, 64))
    roles = {
        i.name: i.role
        for i in classify_parameters(
            untied, base_model_config={"width": 16}, target_model_config={"width": 64}
        )
    }
    assert roles["embed.weight"] == "input" and roles["head.weight"] == "output"
    with pytest.raises(AmbiguousParameterError, match=r"embed\.weight.*roles="):
        classify_parameters(
            TiedLM(64), base_model_config={"width": 16}, target_model_config={"width": 64}
        )
    infos = classify_parameters(
        TiedLM(64),
        base_model_config={"width": 16},
        target_model_config={"width": 64},
        roles={"embed.weight": "output"},
    )
    assert {i.name: i.role for i in infos}["embed.weight"] == "output"


class Custom(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.w = nn.Parameter(torch.randn(width, width) / width**0.5)
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        return self.out(self.inp(x) @ self.w)


def test_unknown_layout_and_missing_readout_raise_clear_errors():
    cfg = {"base_model_config": {"width": 8}, "target_model_config": {"width": 32}}
    with pytest.raises(AmbiguousParameterError, match=r"'w'.*input, hidden or output"):
        classify_parameters(Custom(32), **cfg)
    infos = classify_parameters(Custom(32), roles={"w": "hidden"}, **cfg)
    assert {i.name: i.role for i in infos}["w"] == "hidden"
    no_readout = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32))
    with pytest.raises(AmbiguousParameterError, match="readout"):
        classify_parameters(no_readout, **cfg)


def test_conv_norm_and_attention_layers_are_classified():
    def convnet(w):
        return nn.Sequential(
            nn.Conv2d(3, w, 3),
            nn.BatchNorm2d(w),
            nn.Conv2d(w, w, 3),
            nn.ConvTranspose2d(w, w, 2),
            nn.Flatten(),
            nn.Linear(w * 4, 5),
        )

    roles = {i.name: i.role for i in classify_parameters(convnet(32), base_model=convnet(8))}
    assert roles == {
        "0.weight": "input",
        "0.bias": "vector",
        "1.weight": "vector",
        "1.bias": "vector",
        "2.weight": "hidden",
        "2.bias": "vector",
        "3.weight": "hidden",
        "3.bias": "vector",
        "5.weight": "output",
        "5.bias": "fixed",
    }
    attn = nn.ModuleDict({"a": nn.MultiheadAttention(32, 2), "o": nn.Linear(32, 3)})
    with pytest.warns(UserWarning, match="1/sqrt"):
        infos = classify_parameters(
            attn, base_model_config={"width": 8}, target_model_config={"width": 32}
        )
    assert {i.name: i.role for i in infos}["a.in_proj_weight"] == "hidden"


def test_attention_scale_helper():
    assert mup_attention_scale(16, 16) == pytest.approx(1 / 4)
    assert mup_attention_scale(64, 16) == pytest.approx(mup_attention_scale(16, 16) / 4)
    q, k, v = (torch.randn(2, 3, 5, 64) for _ in range(3))
    manual = torch.softmax(q @ k.transpose(-1, -2) * mup_attention_scale(64, 16), -1) @ v
    assert torch.allclose(
        mup_scaled_dot_product_attention(q, k, v, base_d_head=16), manual, atol=1e-5
    )


# ------------------------------------------------------------------ depth
@pytest.mark.parametrize(
    ("alpha", "kind"), [(0.5, "adamw"), (1.0, "adamw"), (0.5, "sgd"), (1.0, "sgd")]
)
def test_depth_transfer_multipliers_and_lr_factors(alpha, kind):
    model = residual_mlp(8, 512, 12, 3)
    opt = create_mu_transfer_optimizer(
        model,
        base_model_config={"width": 64, "depth": 4},
        target_model_config={"width": 512, "depth": 12},
        base_hyperparams={"lr": 1e-3, "weight_decay": 0.01},
        optimizer=kind,
        depth_alpha=alpha,
    )
    r, m = 3.0, 8.0
    blocks = [mod for mod in model.modules() if isinstance(mod, DepthScaledResidual)]
    assert len(blocks) == 12
    assert all(b.multiplier.item() == pytest.approx(r**-alpha) for b in blocks)
    groups = role_of(opt)
    hidden = groups[id(blocks[0].branch[1].weight)]
    depth_factor = r ** (alpha - 1) if kind == "adamw" else r ** (2 * alpha - 1)
    width_factor = 1 / m if kind == "adamw" else 1.0
    assert hidden["lr"] == pytest.approx(1e-3 * width_factor * depth_factor)
    readout = groups[id(model[-1].weight)]
    assert readout["lr"] == pytest.approx(1e-3 / m)  # outside the branches: width only
    assert "multiplier" in str(list(model.state_dict()))


def test_depth_change_without_residual_branches_warns_and_transfers_width_only():
    with pytest.warns(UserWarning, match="DepthScaledResidual"):
        warned = create_mu_transfer_optimizer(
            mlp(64), {"width": 16, "depth": 4}, {"width": 64, "depth": 12}, {"lr": 0.1}
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = create_mu_transfer_optimizer(
            mlp(64),
            {"width": 16, "depth": 4},
            {"width": 64, "depth": 12},
            {"lr": 0.1},
            depth_alpha=None,
        )
    assert isinstance(opt, MuPAdamW)
    assert [g["lr"] for g in warned.param_groups] == [g["lr"] for g in opt.param_groups]


# ------------------------------------------------------------------ checkpoints and wrappers
def make(seed: int = 0):
    torch.manual_seed(seed)
    model = residual_mlp(8, 64, 6, 3)
    opt = create_mu_transfer_optimizer(
        model,
        {"width": 16, "depth": 2},
        {"width": 64, "depth": 6},
        {"lr": 3e-3, "weight_decay": 0.01},
    )
    return model, opt


def test_checkpoint_reload_keeps_groups_and_continues_bit_identically():
    model, opt = make()
    train(model, opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train(model, opt, 3, seed=10)

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    model2, opt2 = make(seed=5)  # different init: everything must come from the checkpoint
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    keys = ("lr", "weight_decay", "eps", "mup_role", "mup_lr_factor")
    assert [{k: g[k] for k in keys} for g in opt2.param_groups] == [
        {k: g[k] for k in keys} for g in state["opt"]["param_groups"]
    ]
    train(model2, opt2, 3, seed=10)
    assert same_params(model, model2)


class DistributedDataParallel(nn.Module):  # the attributes DDP exposes, without a process group
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


def test_ddp_wrapped_model_gets_the_same_groups():
    torch.manual_seed(0)
    plain = mlp(WIDE)
    wrapped = DistributedDataParallel(copy.deepcopy(plain))
    base = DistributedDataParallel(mlp(BASE))  # base names with the "module." prefix also match
    opt_plain = create_mu_transfer_optimizer(
        plain, base_model=mlp(BASE), base_hyperparams={"lr": 0.1}
    )
    opt_wrapped = create_mu_transfer_optimizer(
        wrapped, base_model=base, base_hyperparams={"lr": 0.1}
    )
    describe = [(g["mup_role"], g["lr"], len(g["params"])) for g in opt_plain.param_groups]
    assert describe == [
        (g["mup_role"], g["lr"], len(g["params"])) for g in opt_wrapped.param_groups
    ]
    assert same_params(plain, wrapped.module)
    opt_cfg = create_mu_transfer_optimizer(
        DistributedDataParallel(mlp(WIDE)),
        {"width": BASE},
        {"width": WIDE},
        {"lr": 0.1},
        roles={"module.5.bias": "fixed"},
    )
    assert [(g["mup_role"], g["lr"]) for g in opt_cfg.param_groups] == [d[:2] for d in describe]


# ------------------------------------------------------------------ schedulers and guards
def test_relative_scheduler_keeps_ratios_absolute_one_is_detected():
    model, opt = make()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            train(model, opt, 1)
            sched.step()
    assert check_lr_ratios(opt)

    model, opt = make()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)
    with pytest.warns(RuntimeWarning, match="ratios"):
        train(model, opt, 1)
    model, opt = make()
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=mup_group_lrs(opt, 1e-2), total_steps=10
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model, opt, 2)
        sched.step()
    assert check_lr_ratios(opt)


def test_coupled_adam_weight_decay_is_refused_unless_asked_for():
    with pytest.raises(ValueError, match="adamw"):
        create_mu_transfer_optimizer(
            mlp(WIDE),
            {"width": BASE},
            {"width": WIDE},
            {"lr": 0.1, "weight_decay": 0.1},
            optimizer="adam",
        )
    opt = create_mu_transfer_optimizer(
        mlp(WIDE),
        {"width": BASE},
        {"width": WIDE},
        {"lr": 0.1, "weight_decay": 0.1},
        optimizer="adam",
        allow_coupled_weight_decay=True,
    )
    assert isinstance(opt, MuPAdam) and not isinstance(opt, torch.optim.AdamW)


def test_nonfinite_gradient_skips_the_step_without_touching_state():
    model, opt = make()
    opt.guard.policy = "skip"  # opt-in: μP's default is torch's ("ignore")
    train(model, opt, 2)
    before_params = copy.deepcopy(model.state_dict())
    before_state = copy.deepcopy(opt.state_dict())
    x, y = data()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    next(model.parameters()).grad[0, 0] = math.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    assert all(torch.equal(v, before_params[k]) for k, v in model.state_dict().items())
    after = opt.state_dict()["state"]
    assert all(
        torch.equal(after[i]["exp_avg_sq"], before_state["state"][i]["exp_avg_sq"]) for i in after
    )
    raising = create_mu_transfer_optimizer(
        mlp(WIDE), {"width": BASE}, {"width": WIDE}, {"lr": 0.1}, nonfinite="raise"
    )
    for p in raising.param_groups[0]["params"]:
        p.grad = torch.full_like(p, math.inf)
    with pytest.raises(FloatingPointError):
        raising.step()


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of"),
        ({"base_hyperparams": {"weight_decay": 0.1}}, ValueError, "'lr'"),
        ({"base_hyperparams": {"lr": -1.0}}, ValueError, "base_hyperparams['lr']"),
        ({"base_hyperparams": {"lr": 0.1, "momentum": 0.9}}, ValueError, "base_hyperparams key"),
        ({"depth_alpha": 2.0}, ValueError, "depth_alpha"),
        ({"roles": {"0.weight": "readout"}}, ValueError, "roles['0.weight']"),
        ({"target_model_config": {"width": 48}}, ValueError, "width=48"),
        ({"lr_ratio_check": "maybe"}, ValueError, "lr_ratio_check"),
        ({"parametrization": "ntk"}, ValueError, "parametrization"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, words):
    call = {
        "base_model_config": {"width": BASE},
        "target_model_config": {"width": WIDE},
        "base_hyperparams": {"lr": 0.1},
        **kwargs,
    }
    with pytest.raises(exc) as info:
        create_mu_transfer_optimizer(mlp(WIDE), **call)
    assert words in str(info.value)


def test_optimizer_contract():
    model, opt = make()
    x, y = data()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    assert isinstance(opt.step(closure), torch.Tensor)
    assert "MuPAdamW" in repr(opt)
    clone = copy.deepcopy(opt)
    assert type(clone) is MuPAdamW
    assert clone.guard.policy == "ignore" and clone.lr_ratio_check == "warn"
    extra = nn.Parameter(torch.zeros(3))
    opt.add_param_group({"params": [extra]})
    frozen = model[1].weight
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    frozen.grad = None
    before = frozen.detach().clone()
    opt.step()
    assert torch.equal(frozen, before)  # grad None: skipped
    assert check_lr_ratios(opt)  # a user group without mup_lr_factor is not part of the check
    sgd = create_mu_transfer_optimizer(
        mlp(WIDE), {"width": BASE}, {"width": WIDE}, {"lr": 0.1}, optimizer="sgd"
    )
    assert isinstance(sgd, MuPSGD)
    assert "hidden" in describe_parametrization(
        classify_parameters(mlp(WIDE), base_model=mlp(BASE)), "sgd"
    )
    assert apply_mup_init(mlp(WIDE), classify_parameters(mlp(WIDE), base_model=mlp(BASE))) == 3


# ------------------------------------------------------------------ harness method and study
def test_mup_adam_method_equals_adam_at_base_width(toy):
    from advanced_optimizers.bench.train import RunConfig, train_run

    small = toy.subset(64, 32)
    adam = train_run(RunConfig("adam", width=32, depth=2, epochs=1, batch_size=16), small)
    same = train_run(
        RunConfig(
            "mup-adam", options={"base_width": 32}, width=32, depth=2, epochs=1, batch_size=16
        ),
        small,
    )
    wider = train_run(
        RunConfig(
            "mup-adam", options={"base_width": 16}, width=32, depth=2, epochs=1, batch_size=16
        ),
        small,
    )
    assert adam.history[0]["train_loss"] == same.history[0]["train_loss"]
    assert wider.history[0]["train_loss"] != adam.history[0]["train_loss"]
    from advanced_optimizers.bench.methods import get_method

    with pytest.raises(TypeError):
        get_method("mup-adam", base_widht=32)


def test_lr_sweep_summary_table_and_plot(toy, tmp_path):
    from advanced_optimizers.bench.mup_study import (
        lr_sweep,
        plot_lr_sweep,
        sweep_markdown,
        sweep_summary,
    )

    rows = lr_sweep(
        toy.subset(64, 32),
        [16, 32],
        [-8.0, -5.0],
        seeds=[0],
        epochs=1,
        batch_size=32,
        base_width=16,
    )
    assert len(rows) == 8 and {r["parametrization"] for r in rows} == {"sp", "mup"}
    summary = sweep_summary(rows)
    assert set(summary["mup"]) == {16, 32}
    assert summary["mup"][16]["best_loss"] == min(summary["mup"][16]["loss"].values())
    assert summary["sp"][16]["loss"] == summary["mup"][16]["loss"]  # base width: identical runs
    assert "| 32 |" in sweep_markdown(summary)
    assert plot_lr_sweep(summary, tmp_path / "s.png").stat().st_size > 1000


def test_cli_subcommands_are_registered_with_help():
    from advanced_optimizers.bench.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["mu-transfer", "--widths", "64,128", "--log2-lrs=-10:-8", "--seeds", "3"]
    )
    assert (
        args.widths == [64, 128]
        and args.log2_lrs == [-10.0, -9.0, -8.0]
        and args.seeds == [0, 1, 2]
    )
    assert callable(args.func)
    args = parser.parse_args(["coord-check", "--steps", "2", "--optimizer", "sgd"])
    assert args.steps == 2 and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["mu-transfer", "--log2-lrs=-5:-9"])


def test_delta_model_marks_wide_dims_at_multiplier_one():
    assert {i.role for i in classify_parameters(mlp(BASE), base_model=mlp(BASE))} == {"fixed"}
    roles = {
        i.name: i.role
        for i in classify_parameters(mlp(BASE), base_model=mlp(BASE), delta_model=mlp(BASE + 1))
    }
    assert roles == classified(mlp(WIDE))
    infos = classify_parameters(mlp(BASE), base_model=mlp(BASE), delta_model=mlp(BASE + 1))
    assert all(i.fan_in_mult == i.fan_out_mult == 1.0 for i in infos)


def test_mup_adam_method_on_the_cnn():
    from advanced_optimizers.bench.methods import Setup, get_method
    from advanced_optimizers.bench.models import ModelSpec

    method = get_method("mup-adam", base_width=4, readout_zero_init=True)
    model = method.build_model(ModelSpec("cnn", (1, 8, 8), 10, width=8, depth=1))
    opt = method.build_optimizer(
        model, Setup(lr=1e-3, epochs=1, steps_per_epoch=1, n_train=8, num_classes=10)
    )
    roles = {id(p): g["mup_role"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert roles[id(named["0.weight"])] == "input" and roles[id(named["2.weight"])] == "hidden"
    assert roles[id(named["6.weight"])] == "output"  # wide conv features → 128: a readout
    assert roles[id(named["8.weight"])] == "fixed"
    assert torch.count_nonzero(named["6.weight"]) == 0
