# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparing advanced training algorithms: FER, Gradient Correction, SigProp, LoCal+SGD, μP
#
# This notebook runs the comparison of every registered method (SGD and Adam baselines, the peers and
# the algorithms of `advanced_optimizers`) through the harness's public API, then analyses the results:
# failures counted per method, accuracy and cost over the successful runs with 95% bootstrap intervals,
# paired tests against the baselines and peers with Holm's correction, flipping errors, a
# performance profile of time-to-target across the MLP and the CNN, and recommendations derived from
# the numbers.
#
# **Protocol.** A validation split is carved off the end of MNIST's training set (the last 10 000
# images in full mode); every choice — learning rates (`advopt tune`), targets, best epochs — is made
# on it, and each final run reads the test set once, after its last epoch.
#
# **Modes.** `MODE = "quick"` (default) finishes in a few minutes on 2 CPU cores on a subset of the
# bundled MNIST, every method at its default learning rate; `MODE = "full"` is the study: the MLP
# 784-512-512-10 of `advopt compare --preset full` (50 000 training images, 5 seeds, 10 epochs, cosine
# schedule) and the CNN of `advopt compare --preset full --arch cnn --width 8 --n-train 20000
# --epochs 8`, each at the settings tuned by `advopt tune` (`results/mnist-mlp/tune/tuning.json`,
# `results/mnist-cnn/tune/tuning.json`), read from (or resumed into) the study's directories
# `results/mnist-mlp/final` and `results/mnist-cnn/final`, so nothing finished is trained again. Set it
# in the parameters cell below, or with papermill:
# `papermill experiments_comparison.ipynb out.ipynb -p MODE full` (`make notebook` does this and
# saves the outputs here). Every number shown is computed by the cells, nothing is typed in.

# %% tags=["parameters"]
MODE = "quick"  # "quick" or "full"
OUT_ROOT = "results"  # quick: OUT_ROOT/mnist-mlp-quick etc.; full: the study's directories
CIFAR_DIR = None  # a directory holding cifar-10-batches-py, if any

# %%
# each cell imports what it uses (as a script, those imports follow the parameters cell)
# ruff: noqa: E402
from pathlib import Path

from advanced_optimizers.bench.compare import PRESETS

OUT = Path(OUT_ROOT)
SETTINGS = dict(PRESETS[MODE])  # the CLI's --preset: arch, depth, epochs, seeds, n_train, ...
CNN_SETTINGS = dict(SETTINGS, arch="cnn", depth=None)  # --preset full --arch cnn
if MODE == "quick":  # a few minutes on 2 CPU cores
    SETTINGS.update(n_train=3000, n_test=2000)
    # FER needs > 1 epoch
    CNN_SETTINGS.update(epochs=2, seeds=[0], n_train=1000, n_test=1000, validation=1000)
    MLP_DIR, CNN_DIR = OUT / "mnist-mlp-quick", OUT / "mnist-cnn-quick"
else:  # the study: --width 8 --n-train 20000 --epochs 8 fit 16 methods x 5 seeds on 2 cores
    CNN_SETTINGS.update(width=8, depth=2, n_train=20_000, epochs=8)
    MLP_DIR, CNN_DIR = OUT / "mnist-mlp" / "final", OUT / "mnist-cnn" / "final"
# `advopt tune --preset full --trials 6 --out results/mnist-mlp/tune` (and --arch cnn ... mnist-cnn);
# quick mode uses a tuning only if one was made for it (same settings) beside its runs
TUNED_MLP = MLP_DIR.parent / "tune" / "tuning.json" if MODE == "full" else MLP_DIR / "tuning.json"
TUNED_CNN = CNN_DIR.parent / "tune" / "tuning.json" if MODE == "full" else CNN_DIR / "tuning.json"
print(MODE, SETTINGS, CNN_SETTINGS, sep="\n")

# %% [markdown]
# ## 1. Data
#
# The real MNIST ships inside the package; CIFAR-10 is read from a directory you give (section 7).

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

from advanced_optimizers.bench.data import load_dataset

mnist = load_dataset("mnist", progress=False)
print(f"MNIST: train {tuple(mnist.x_train.shape)}, test {tuple(mnist.x_test.shape)}")
print("class counts (train):", torch.bincount(mnist.y_train).tolist())
fig, axes = plt.subplots(2, 8, figsize=(10, 3))
for ax, i in zip(axes.flat, range(16), strict=True):
    ax.imshow(mnist.x_train[i, 0], cmap="gray")
    ax.set_title(int(mnist.y_train[i]))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. Every method on the MNIST MLP
#
# Same seeds for every method: same initial weights and the same batch order, so the tests below are
# paired. Each method runs at its tuned learning rate (and option) when the tuning study exists — every
# method got the same tuning budget on the validation split — and at its default otherwise.

# %%
from IPython.display import Image, Markdown, display

from advanced_optimizers.bench.compare import Experiment, apply_tuning, run_experiment
from advanced_optimizers.bench.methods import method_summaries
from advanced_optimizers.bench.report import markdown_table, summarize
from advanced_optimizers.bench.tune import read_tuning

for name, text in method_summaries().items():
    print(f"{name:<14} {text}")


def tuned(settings: dict, tuning_file: Path) -> Experiment:
    """The experiment at the tuned settings of ``tuning_file`` if it exists, else at defaults."""
    if not tuning_file.exists():
        print(f"no {tuning_file}: every method at its default learning rate (untuned)")
        return Experiment(dataset="mnist", **settings)
    methods = list(read_tuning(tuning_file)["methods"])
    print(f"tuned settings from {tuning_file}")
    return apply_tuning(Experiment(dataset="mnist", methods=methods, **settings), tuning_file)


experiment = tuned(SETTINGS, TUNED_MLP)
runs = run_experiment(experiment, MLP_DIR, dataset=mnist, progress=False)
summary = summarize(runs)
display(Markdown(markdown_table(summary)))

# %% [markdown]
# ## 3. Learning curves: validation accuracy and training cross-entropy against epochs and time
#
# The training-loss panels show plain cross-entropy on a fixed training subset for every method (like
# with like); each method's own objective (FER's, SigProp's sum of local losses) has its own panel in
# `plots/objectives.png`, and the tuning studies' learning-rate sensitivity is in their
# `plots/lr_sensitivity.png`. Failed runs are dotted, "never reached" is marked, every run is a point
# beside its mean.

# %%
plots = MLP_DIR / "plots"
display(Image(filename=str(plots / "curves.png")))
display(Image(filename=str(plots / "summary.png")))
others = [plots / "objectives.png"]
others += [t.parent / "plots" / "lr_sensitivity.png" for t in (TUNED_MLP, TUNED_CNN)]
print("more figures:", *[str(f) for f in others if f.exists()], sep="\n  ")

# %% [markdown]
# ## 4. Statistical analysis
#
# Per-seed differences of final test accuracy against each baseline: paired t-test, Holm-adjusted
# p-value over the whole family of tested comparisons, Cohen's d_z and Wilcoxon's signed-rank p-value.
# A comparison is not tested when either method has a failed run, with fewer than 3 pairs, or when
# the differences do not vary. With few seeds the power is low: "no significant difference" means
# exactly that, not "equal".

# %%
import pandas as pd

comparisons = pd.DataFrame(summary["comparisons"])
if len(comparisons):
    comparisons["mean_diff_pp"] = 100 * comparisons["mean_diff"]
    display(
        comparisons[
            [
                "method",
                "baseline",
                "n",
                "mean_diff_pp",
                "p_value",
                "p_holm",
                "cohens_dz",
                "wilcoxon_p",
                "verdict",
            ]
        ].round(4)
    )

# %% [markdown]
# ## 5. Flipping errors
#
# WFS: validation samples wrong at the last epoch that were right at some earlier epoch;
# RFE = WFS / errors. Over the successful runs.

# %%
display(Image(filename=str(plots / "flips.png")))
flips = pd.DataFrame(
    {
        name: {
            "WFS": s["wfs"]["mean"],
            "RFE": s["rfe"]["mean"],
            "final acc %": 100 * s["final_acc"]["mean"],
        }
        for name, s in summary["methods"].items()
    }
).T
display(flips.round(3))

# %% [markdown]
# ## 6. Every method on the MNIST CNN
#
# The VGG-style CNN (two blocks of two 3x3 convolutions, 16 and 32 channels, then Linear(128)) under
# the same protocol (`advopt compare --preset full --arch cnn`, sized with --width/--depth/--n-train).

# %%
cnn_experiment = tuned(CNN_SETTINGS, TUNED_CNN)
cnn_runs = run_experiment(cnn_experiment, CNN_DIR, dataset=mnist, progress=False)
cnn_summary = summarize(cnn_runs)
display(Markdown(markdown_table(cnn_summary)))
display(Image(filename=str(CNN_DIR / "plots" / "curves.png")))

# %% [markdown]
# ### Performance profile across the workloads
#
# For each method, the fraction of workloads (the MLP and the CNN) on which its median time to the
# workload's validation target is within τ × the fastest method's (never reached = ∞).

# %%
from advanced_optimizers.bench.plots import plot_profile
from advanced_optimizers.bench.profiles import performance_profile, profile_table

profile = performance_profile([MLP_DIR, CNN_DIR])
display(Markdown(profile_table(profile)))
for method, curve in profile["curves"].items():  # rho at tau = 1 (fastest) and at the largest tau
    print(f"{method:<20} fastest on {curve[0]:.0%}, reached the target on {curve[-1]:.0%}")
PROFILE_DIR = OUT / "profile" if MODE == "full" else OUT / "profile-quick"
print("profile plot:", plot_profile(profile, PROFILE_DIR / "profile.png"))

# %% [markdown]
# ## 7. CIFAR-10 (when the data is given)

# %%
from advanced_optimizers.bench.data import DataNotFoundError

try:
    cifar = load_dataset("cifar10", data_dir=CIFAR_DIR, download_ok=False, progress=False)
except DataNotFoundError as exc:
    cifar = None
    print("CIFAR-10 is not on this machine, so this section is skipped.\n")
    print(exc)
    print(
        "\nGet it with `advopt data --dataset cifar10 --data-dir DIR` (downloads and checks "
        "cifar-10-python.tar.gz) and set the parameter CIFAR_DIR = DIR (papermill: -p CIFAR_DIR DIR)."
    )
if cifar is not None:
    cifar_settings = dict(CNN_SETTINGS, validation=None)  # CIFAR-10's default: the last 5000
    if MODE == "quick":
        cifar_settings.update(validation=1000)
    cifar_exp = Experiment(dataset="cifar10", **cifar_settings)
    cifar_runs = run_experiment(
        cifar_exp, OUT / f"cifar10-cnn-{MODE}", dataset=cifar, progress=False
    )
    display(Markdown(markdown_table(summarize(cifar_runs))))

# %% [markdown]
# ## 8. Recommendations (derived from the numbers above)

# %%
lines = []
for label, result in (("MLP", summary), ("CNN", cnn_summary)):
    methods = {m: s for m, s in result["methods"].items() if s["final_acc"]["n"]}  # not all failed
    best = max(methods, key=lambda m: methods[m]["final_acc"]["mean"])
    fastest = min(methods, key=lambda m: methods[m]["sec_per_epoch"]["mean"])
    fewest_flips = min(methods, key=lambda m: methods[m]["wfs"]["mean"])
    lines += [
        f"**{label}** (selection: {result['selection']})",
        f"- Highest mean final accuracy (test): **{best}** ({100 * methods[best]['final_acc']['mean']:.2f}%).",
        f"- Cheapest per epoch: **{fastest}** ({methods[fastest]['sec_per_epoch']['mean']:.2f} s).",
        f"- Fewest wrongly flipped validation samples: **{fewest_flips}** "
        f"({methods[fewest_flips]['wfs']['mean']:.1f}).",
    ]
    failed = [f"{m} {s['failed']}/{s['runs']}" for m, s in result["methods"].items() if s["failed"]]
    if failed:
        lines.append(
            "- Runs that failed (diverged or stayed at chance): " + ", ".join(failed) + "."
        )
    for c in result["comparisons"]:
        if c["verdict"] in ("better", "worse"):
            lines.append(
                f"- {c['method']} vs {c['baseline']}: {c['verdict']} "
                f"({100 * c['mean_diff']:+.2f} pp, Holm p = {c['p_holm']:.3g})."
            )
    same = sorted(
        {c["method"] for c in result["comparisons"] if c["verdict"] == "no significant difference"}
    )
    if same:
        lines.append(
            "- No significant difference from at least one baseline at this budget: "
            + ", ".join(same)
            + "."
        )
display(Markdown("\n".join(lines)))
