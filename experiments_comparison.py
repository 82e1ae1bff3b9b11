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
# This notebook runs the comparison of every registered method (SGD and Adam baselines and the five
# algorithms of `advanced_optimizers`) through the harness's public API, then analyses the results:
# accuracy and cost with 95% confidence intervals over seeds, paired tests against the baselines with
# Holm's correction, flipping errors, and recommendations derived from the numbers.
#
# **Modes.** `MODE = "quick"` (default) finishes in a few minutes on 2 CPU cores on a subset of the
# bundled MNIST; `MODE = "full"` is the study's setting: the MLP runs of `advopt compare --preset full`
# (whole training set, 5 seeds, 15 epochs, cosine schedule) and the CNN runs of the report's CNN
# command, read from (or resumed into) the same `results/` directories, so nothing finished is
# trained again. Set it in the parameters cell below, or with papermill:
# `papermill experiments_comparison.ipynb out.ipynb -p MODE full` (`make notebook` does this and
# saves the outputs here). Every number shown is computed by the cells, nothing is typed in.

# %% tags=["parameters"]
MODE = "quick"  # "quick" or "full"
OUT_ROOT = "results"  # the runs go to OUT_ROOT/mnist-mlp-MODE etc. (relative to the working dir)
CIFAR_DIR = None  # a directory holding cifar-10-batches-py, if any

# %%
# each cell imports what it uses (as a script, those imports follow the parameters cell)
# ruff: noqa: E402
from pathlib import Path

from advanced_optimizers.bench.compare import PRESETS

OUT = Path(OUT_ROOT)
SETTINGS = dict(PRESETS[MODE])  # the CLI's --preset: epochs, seeds, n_train, n_test, schedule
CNN_SETTINGS = dict(SETTINGS, epochs=4, seeds=[0, 1, 2])  # the report's CNN study
if MODE == "quick":  # a few minutes on 2 CPU cores
    SETTINGS.update(n_train=3000, n_test=2000)
    CNN_SETTINGS.update(epochs=2, seeds=[0], n_train=1000, n_test=1000)  # FER needs > 1 epoch
MLP_DIR = OUT / f"mnist-mlp-{MODE}"
CNN_DIR = OUT / ("mnist-cnn-study" if MODE == "full" else "mnist-cnn-quick")
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
# ## 2. Every method on the MNIST MLP (784-512-10)
#
# Same seeds for every method: same initial weights and the same batch order, so the tests below are paired.

# %%
from IPython.display import Image, Markdown, display

from advanced_optimizers.bench.compare import Experiment, run_experiment
from advanced_optimizers.bench.methods import method_summaries
from advanced_optimizers.bench.report import markdown_table, summarize

for name, text in method_summaries().items():
    print(f"{name:<14} {text}")

experiment = Experiment(dataset="mnist", arch="mlp", **SETTINGS)
runs = run_experiment(
    experiment,
    MLP_DIR,
    dataset=mnist.subset(SETTINGS["n_train"], SETTINGS["n_test"]),
    progress=False,
)
summary = summarize(runs)
display(Markdown(markdown_table(summary)))

# %% [markdown]
# ## 3. Learning curves: accuracy and loss against epochs and against wall-clock time

# %%
plots = MLP_DIR / "plots"
display(Image(filename=str(plots / "curves.png")))
display(Image(filename=str(plots / "summary.png")))

# %% [markdown]
# ## 4. Statistical analysis
#
# Per-seed differences of final test accuracy against each baseline: paired t-test, Holm-adjusted
# p-value over the whole family of comparisons, Cohen's d_z and Wilcoxon's signed-rank p-value.
# With few seeds the power is low: "no significant difference" means exactly that, not "equal".

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
# WFS: test samples wrong at the last epoch that were right at some earlier epoch; RFE = WFS / errors.

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
# The VGG-style CNN (two blocks of two 3x3 convolutions, 16 and 32 channels, then Linear(128)). Full
# mode: 3 seeds x 4 epochs on the whole training set, cosine schedule (the budget 2 CPU cores allow;
# `advopt compare --preset full --arch cnn --seeds 3 --epochs 4 --out results/mnist-cnn-study`).

# %%
cnn_experiment = Experiment(dataset="mnist", arch="cnn", **CNN_SETTINGS)
cnn_runs = run_experiment(
    cnn_experiment,
    CNN_DIR,
    dataset=mnist.subset(CNN_SETTINGS["n_train"], CNN_SETTINGS["n_test"]),
    progress=False,
)
cnn_summary = summarize(cnn_runs)
display(Markdown(markdown_table(cnn_summary)))
display(Image(filename=str(CNN_DIR / "plots" / "curves.png")))

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
    cifar_exp = Experiment(dataset="cifar10", arch="cnn", **SETTINGS)
    cifar_runs = run_experiment(
        cifar_exp,
        OUT / f"cifar10-cnn-{MODE}",
        dataset=cifar.subset(SETTINGS["n_train"], SETTINGS["n_test"]),
        progress=False,
    )
    display(Markdown(markdown_table(summarize(cifar_runs))))

# %% [markdown]
# ## 8. Recommendations (derived from the numbers above)

# %%
lines = []
for label, result in (("MLP", summary), ("CNN", cnn_summary)):
    methods = result["methods"]
    best = max(methods, key=lambda m: methods[m]["final_acc"]["mean"])
    fastest = min(methods, key=lambda m: methods[m]["sec_per_epoch"]["mean"])
    fewest_flips = min(methods, key=lambda m: methods[m]["wfs"]["mean"])
    lines += [
        f"**{label}**",
        f"- Highest mean final accuracy: **{best}** ({100 * methods[best]['final_acc']['mean']:.2f}%).",
        f"- Cheapest per epoch: **{fastest}** ({methods[fastest]['sec_per_epoch']['mean']:.2f} s).",
        f"- Fewest wrongly flipped test samples: **{fewest_flips}** ({methods[fewest_flips]['wfs']['mean']:.1f}).",
    ]
    for c in result["comparisons"]:
        if c["verdict"] not in ("no significant difference", "too few seeds to test"):
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
