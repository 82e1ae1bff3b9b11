"""μP's tuned multipliers (readout multiplier, init scale) and the μTransfer study (advopt mu-study)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advanced_optimizers.mup import (
    apply_mup_init,
    classify_parameters,
    create_mu_transfer_optimizer,
    mup_factors,
)

torch.set_num_threads(1)
BASE, WIDE = 8, 32  # m = 4


def mlp(width: int, n_in: int = 6, n_out: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, n_out),
    )


class ExplicitReadout(nn.Linear):
    """mup's ``MuReadout`` written out: ``W (c·x) + b`` with ``c = α / m``."""

    def __init__(self, *args, c: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.c = c

    def forward(self, x):
        return super().forward(self.c * x)


def batches(steps: int, n_in: int = 6):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, n_in, generator=g, dtype=torch.float64)
        yield x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def run(model, opt, steps=6):
    for x, y in batches(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        return model(next(iter(batches(1)))[0])


# ------------------------------------------------------------------ the readout multiplier
@pytest.mark.parametrize(
    ("kind", "hyper"),
    [
        ("adam", {"lr": 0.02, "eps": 1e-8}),
        ("adamw", {"lr": 0.02, "eps": 1e-8, "weight_decay": 0.1}),
        ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ],
)
@pytest.mark.parametrize("alpha", [0.25, 3.0])
def test_readout_multiplier_is_an_explicit_forward_multiplier(kind, hyper, alpha):
    """Ours (no multiplier: init × α, Adam LR × α / SGD LR × α², wd ÷ the LR factor) follows the
    trajectory of a model with an explicit readout multiplier α/m trained as mup trains it (readout
    init ×√m; Adam: the readout at the base LR; SGD: the readout at LR × m, its wd ÷ m), given the
    eps each form needs (ours: eps; the explicit readout: eps·α/m)."""
    m = WIDE / BASE
    c = alpha / m
    torch.manual_seed(0)
    ours = mlp(WIDE).double()
    explicit = copy.deepcopy(ours)
    opt = create_mu_transfer_optimizer(
        ours, base_model=mlp(BASE), base_hyperparams=hyper, optimizer=kind,
        readout_multiplier=alpha,
    )  # fmt: skip
    # the explicit model: same hidden layers (ours' μP init), readout W_e with c·W_e = W_ours
    readout = ExplicitReadout(WIDE, 3, c=c).double()
    with torch.no_grad():
        readout.weight.copy_(ours[4].weight / c)
        readout.bias.copy_(ours[4].bias)
        for i in (0, 2):
            explicit[i].weight.copy_(ours[i].weight)
            explicit[i].bias.copy_(ours[i].bias)
    explicit[4] = readout
    lr, wd = hyper["lr"], hyper.get("weight_decay", 0.0)
    eps = hyper.get("eps", 1e-8)
    adam = kind != "sgd"
    # per parameter (lr, wd, eps) of μP with an explicit multiplier (mup's MuAdam / MuSGD rules)
    rules = {
        "0.weight": (lr if adam else lr * m, wd if adam else wd / m, eps / m),  # input
        "0.bias": (lr if adam else lr * m, wd if adam else wd / m, eps / m),  # vector
        "2.weight": (lr / m if adam else lr, wd * m if adam else wd, eps / m),  # hidden
        "2.bias": (lr if adam else lr * m, wd if adam else wd / m, eps / m),  # vector
        "4.weight": (lr if adam else lr * m, wd if adam else wd / m, eps * c),  # readout
        "4.bias": (lr, wd, eps),  # fixed
    }
    if kind == "adamw":  # decoupled: the per-step decay lr·wd is what is kept
        rules["2.weight"] = (lr / m, wd * m, eps / m)
    groups = []
    for name, p in explicit.named_parameters():
        g_lr, g_wd, g_eps = rules[name]
        group = {"params": [p], "lr": g_lr, "weight_decay": g_wd}
        if adam:
            group["eps"] = g_eps
        groups.append(group)
    extra = {k: v for k, v in hyper.items() if k in ("momentum",)}
    torch_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    explicit_opt = torch_cls[kind](groups, **extra)
    a, b = run(ours, opt), run(explicit, explicit_opt)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours[4].weight, c * explicit[4].weight, rtol=1e-10, atol=1e-12)


def test_factors_of_the_multipliers():
    infos = {i.name: i for i in classify_parameters(mlp(WIDE), base_model=mlp(BASE))}
    out = infos["4.weight"]
    for kind, lr in (("adam", 2.0 / 4), ("sgd", 4.0 / 4)):
        f = mup_factors(out, kind, readout_multiplier=2.0, init_scale=0.5)
        assert f.lr == pytest.approx(lr) and f.weight_decay == pytest.approx(1 / lr)
        assert f.init == pytest.approx(2.0 * 0.5 / 2)  # α·σ/√m
        assert f.eps == 1.0  # the readout's eps is not changed
    bias = mup_factors(infos["4.bias"], readout_multiplier=2.0, init_scale=0.5)
    assert (bias.lr, bias.init) == (1.0, 2.0)  # √m only: neither α nor σ touch biases
    hidden = mup_factors(infos["2.weight"], readout_multiplier=2.0, init_scale=0.5)
    assert (hidden.lr, hidden.init) == (0.25, 0.5)
    for info in infos.values():  # 1.0: today's factors exactly
        assert mup_factors(info, readout_multiplier=1.0, init_scale=1.0) == mup_factors(info)
    with pytest.raises(ValueError, match="readout_multiplier"):
        mup_factors(out, readout_multiplier=0.0)
    with pytest.raises(ValueError, match="init_scale"):
        create_mu_transfer_optimizer(mlp(WIDE), base_model=mlp(BASE),
                                     base_hyperparams={"lr": 0.1}, init_scale=float("nan"))  # fmt: skip


# ------------------------------------------------------------------ the init scale
@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_init_scale_multiplies_every_weight_and_no_bias(parametrization):
    torch.manual_seed(3)
    model = mlp(WIDE)
    reference = copy.deepcopy(model)
    kwargs = {"base_model_config": {"width": BASE if parametrization == "mup" else WIDE},
              "target_model_config": {"width": WIDE}}  # fmt: skip
    create_mu_transfer_optimizer(model, **kwargs, base_hyperparams={"lr": 0.1},
                                 parametrization=parametrization, init_scale=0.5,
                                 readout_multiplier=3.0)  # fmt: skip
    ratio = {n: (p / q).nanmean().item()
             for (n, p), q in zip(model.named_parameters(), reference.parameters(), strict=True)}  # fmt: skip
    root_m = 2.0 if parametrization == "mup" else 1.0
    assert ratio["0.weight"] == pytest.approx(0.5)
    assert ratio["2.weight"] == pytest.approx(0.5)
    assert ratio["4.weight"] == pytest.approx(3.0 * 0.5 / root_m)
    assert ratio["0.bias"] == pytest.approx(1.0)
    assert ratio["2.bias"] == pytest.approx(root_m)
    assert ratio["4.bias"] == pytest.approx(root_m)


def test_sp_with_multipliers_needs_the_readout_and_defaults_change_nothing():
    with pytest.raises(ValueError, match="readout"):
        create_mu_transfer_optimizer(mlp(WIDE), base_hyperparams={"lr": 0.1},
                                     parametrization="sp", readout_multiplier=2.0)  # fmt: skip
    torch.manual_seed(0)
    model = mlp(WIDE)
    before = copy.deepcopy(model)
    opt = create_mu_transfer_optimizer(model, base_hyperparams={"lr": 0.1}, parametrization="sp",
                                       readout_multiplier=1.0, init_scale=1.0)  # fmt: skip
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["mup_role"] == "fixed"
    assert all(
        torch.equal(p, q) for p, q in zip(model.parameters(), before.parameters(), strict=True)
    )
    # SP with the multipliers = μP at the base width with them
    torch.manual_seed(0)
    sp, mu = mlp(WIDE).double(), None
    mu = copy.deepcopy(sp)
    same = {"base_hyperparams": {"lr": 0.01}, "readout_multiplier": 0.5, "init_scale": 2.0,
            "optimizer": "adam"}  # fmt: skip
    sp_opt = create_mu_transfer_optimizer(sp, {"width": WIDE}, {"width": WIDE},
                                          parametrization="sp", **same)  # fmt: skip
    mu_opt = create_mu_transfer_optimizer(mu, base_model=mlp(WIDE), delta_model=mlp(WIDE + 1),
                                          **same)  # fmt: skip
    assert torch.equal(run(sp, sp_opt), run(mu, mu_opt))


def test_apply_mup_init_refuses_other_multipliers_on_a_rescaled_model():
    model = mlp(WIDE)
    infos = classify_parameters(model, base_model=mlp(BASE))
    assert apply_mup_init(model, infos, init_scale=0.5) == 6 - 1  # all but the input's bias
    with pytest.raises(ValueError, match="init_scale"):
        apply_mup_init(model, infos, init_scale=2.0)


def test_harness_method_options(toy):
    from advanced_optimizers.bench.methods import get_method
    from advanced_optimizers.bench.train import RunConfig, train_run

    options = get_method("mup-adam").options
    assert options["readout_multiplier"] == 1.0 and options["init_scale"] == 1.0
    assert options["parametrization"] == "mup"
    small = toy.subset(64, 32)
    common = {"width": 32, "depth": 2, "epochs": 1, "batch_size": 16}
    adam = train_run(RunConfig("adam", **common), small)
    sp = train_run(RunConfig("mup-adam", options={"parametrization": "sp"}, **common), small)
    assert adam.final["train_loss"] == sp.final["train_loss"]  # SP, multipliers 1: adam itself
    tuned = {"readout_multiplier": 2.0, "init_scale": 0.5}
    sp2 = train_run(
        RunConfig("mup-adam", options={"parametrization": "sp", **tuned}, **common), small
    )
    base = train_run(RunConfig("mup-adam", options={"base_width": 32, **tuned}, **common), small)
    assert sp2.final["train_loss"] == base.final["train_loss"] != adam.final["train_loss"]


# ------------------------------------------------------------------ the study
def tiny_config(**changes):
    from advanced_optimizers.bench.mup_study.routes import StudyConfig

    settings = {"dataset": "toy", "n_train": 192, "validation": 64, "epochs": 1, "long_epochs": 2,
                "batch_size": 32, "proxy_width": 8, "target_width": 16, "trials": 2,
                "seeds": (0, 1), "widths": (8, 16), "width_seeds": (0,), "oracle": False}  # fmt: skip
    return StudyConfig(**{**settings, **changes})


def tiny_data():
    from conftest import toy_dataset

    return toy_dataset(256, 32)


def test_study_routes_outputs(tmp_path):
    from advanced_optimizers.bench.mup_study.study import run_study

    report = run_study(tiny_config(), tmp_path, dataset=tiny_data(), say=lambda _: None)
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    assert set(tuning) == {"mup", "sp"}
    assert tuning["mup"]["protocol"]["width"] == 8 and tuning["sp"]["protocol"]["width"] == 16
    for record in tuning.values():
        assert len(record["trials"]) == 2
        assert set(record["trials"][0]["params"]) == {"lr", "readout_multiplier", "init_scale"}
        assert record["best"] in record["trials"]
    # common random numbers: the first (random) trial is the same point in both routes
    assert tuning["mup"]["trials"][0]["params"] == tuning["sp"]["trials"][0]["params"]
    assert sorted(p.name for p in (tmp_path / "finals").iterdir()) == [
        "mup_seed0.json", "mup_seed1.json", "sp_seed0.json", "sp_seed1.json"]  # fmt: skip
    final = json.loads((tmp_path / "finals" / "mup_seed0.json").read_text())["run"]
    assert final["config"]["width"] == 16 and final["config"]["n_val"] == 64
    assert final["config"]["options"]["readout_multiplier"] == tuning["mup"]["best"]["params"][
        "readout_multiplier"]  # fmt: skip
    routes = report["routes"]
    assert routes["mup"]["trials"] == routes["sp"]["trials"] == 2
    assert set(report["cost_fraction"]) == {"wall_seconds", "train_seconds", "flops", "train_flops"}
    assert report["cost_fraction"]["flops"] < 1  # the proxy is narrower
    assert "val_acc" in report["paired_mup_minus_sp"]
    assert set(report["widths"]["table"]["ours"]) == {1, 2}  # both horizons from one run
    assert report["consistency"] and report["consistency"][0]["diff"] == 0.0  # same loop
    assert "| route |" in (tmp_path / "study.md").read_text()
    assert (tmp_path / "widths.png").exists() and (tmp_path / "tuning.png").exists()


def test_study_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    from advanced_optimizers.bench.mup_study import routes
    from advanced_optimizers.bench.mup_study.study import run_study

    config, data = tiny_config(), tiny_data()
    quiet = {"dataset": data, "say": lambda _: None, "stages": ["tune"]}
    run_study(config, tmp_path / "whole", **quiet)
    real, calls = routes.train_run, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the mup route's second trial
        return real(*args, **kwargs)

    monkeypatch.setattr(routes, "train_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, tmp_path / "cut", **quiet)
    monkeypatch.setattr(routes, "train_run", real)
    run_study(config, tmp_path / "cut", **quiet)
    whole = json.loads((tmp_path / "whole" / "tuning.json").read_text())
    cut = json.loads((tmp_path / "cut" / "tuning.json").read_text())
    for route in ("mup", "sp"):  # the resumed study drew what the uninterrupted one did
        assert [t["params"] for t in cut[route]["trials"]] == [
            t["params"] for t in whole[route]["trials"]]  # fmt: skip
        assert [t["value"] for t in cut[route]["trials"]] == [
            t["value"] for t in whole[route]["trials"]]  # fmt: skip
    monkeypatch.setattr(routes, "train_run", lambda *a, **k: pytest.fail("re-ran a trial"))
    run_study(config, tmp_path / "cut", **quiet)  # complete: nothing to run
    with pytest.raises(ValueError, match="other settings"):
        run_study(tiny_config(trials=3), tmp_path / "cut", **quiet)


def test_study_marks_a_killed_trial_failed_and_runs_it_again(tmp_path):
    import optuna

    from advanced_optimizers.bench.mup_study.routes import tune_route
    from advanced_optimizers.bench.mup_study.study import study_data

    config = tiny_config(trials=1)
    data = study_data(config, tiny_data()).without_test()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    from advanced_optimizers.bench.mup_study.routes import _open_study

    _open_study(config, "mup", url, data, None).ask()  # a trial left RUNNING by a killed worker
    record = tune_route(config, "mup", data, url, say=lambda _: None)
    assert len(record["trials"]) == 1 and record["trials"][0]["number"] == 1
    states = [t.state.name for t in optuna.load_study(study_name="mup", storage=url).trials]
    assert states == ["FAIL", "COMPLETE"]


def test_study_loop_is_the_harness_loop_and_matches_microsoft_mup():
    pytest.importorskip("mup")
    from advanced_optimizers.bench.models import ModelSpec
    from advanced_optimizers.bench.mup_study.study import study_data
    from advanced_optimizers.bench.mup_study.widths import build_oracle, build_ours, fit
    from advanced_optimizers.bench.train import RunConfig, train_run

    config = tiny_config()
    data = study_data(config, tiny_data()).without_test()
    setting = {"lr": 0.01, "readout_multiplier": 2.5, "init_scale": 0.7}
    spec = ModelSpec("mlp", data.input_shape, 10, 32, 2)
    options = {"base_width": 8, "readout_multiplier": 2.5, "init_scale": 0.7}
    harness = train_run(RunConfig("mup-adam", options=options, width=32, depth=2, epochs=2,
                                  batch_size=32, lr=0.01, seed=4), data, evaluate_test=False)  # fmt: skip
    torch.manual_seed(4)
    model, opt = build_ours(spec, 8, setting)
    ours = fit(model, opt, data, epochs=2, batch_size=32, seed=4)
    assert [h["train_loss"] for h in ours] == [h["train_loss"] for h in harness.history]
    assert ours[-1]["val_acc"] == harness.final["val_acc"]
    # microsoft/mup with output_mult = α and the weights' init × σ: the same run with eps → 0
    traces = []
    for build in (build_ours, build_oracle):
        torch.manual_seed(4)
        model, opt = build(spec, 8, setting, eps=1e-30, dtype=torch.float64)
        trace = []
        fit(model, opt, data, epochs=1, batch_size=32, seed=4, dtype=torch.float64,
            on_step=lambda _, v, t=trace: t.append(v))  # fmt: skip
        traces.append(trace)
    # round-off only (Adam's first steps are ~sign(g): an entry of g near 0 can flip, ~1e-9 here;
    # the MNIST runs of the study are bit-identical); eps = 1e-8 differs by ~1e-4
    assert traces[0] == pytest.approx(traces[1], rel=1e-7, abs=1e-7)
    assert traces[0][0] == traces[1][0]  # the same initial function


def test_cli_parses_mu_study():
    from advanced_optimizers.bench.cli import build_parser

    args = build_parser().parse_args(
        ["mu-study", "--stages", "tune,final", "--log2-lr=-12:-6", "--seeds", "3", "--trials", "4"]
    )
    assert args.stages == ["tune", "final"] and args.seeds == [0, 1, 2] and args.trials == 4
    assert args.log2_lr == (2.0**-12, 2.0**-6) and callable(args.func)
