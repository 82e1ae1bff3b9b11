"""The μTransfer study's tables (Markdown) and plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["plot_tuning", "plot_widths", "study_markdown"]

_NAMES = {"mup": "μP, tuned at the proxy, transferred", "sp": "SP, tuned at the target"}


def _pm(entry: dict[str, Any] | None, digits: int = 4, scale: float = 1.0) -> str:
    if not entry:
        return "—"
    std = entry["std"]
    text = f"{entry['mean'] * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std == std else "")


def _setting(setting: dict[str, float] | None) -> str:
    if not setting:
        return "—"
    return (
        f"lr 2^{math.log2(setting['lr']):.2f}, α {setting['readout_multiplier']:.3g}, "
        f"σ {setting['init_scale']:.3g}"
    )


def _fraction(value: float) -> str:
    return f"{value:.4f} (1/{1 / value:.0f})" if 0 < value < 1 else f"{value:.4f}"


def routes_markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    width = {"mup": config["proxy_width"], "sp": config["target_width"]}
    lines = [
        "| route | tuned at width | trials (failed) | tuning wall s | tuning TFLOPs | chosen setting "
        "| tuning val acc | final val acc % | final test acc % | final train loss | failed finals |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for route, e in report["routes"].items():
        lines.append(
            f"| {_NAMES.get(route, route)} | {width[route]} | {e['trials']} ({e['failed_runs']}) | "
            f"{e['compute']['wall_seconds']:.0f} | {e['compute']['flops'] / 1e12:.1f} | "
            f"{_setting(e['setting'])} | {e['tuning_val_acc']:.4f} | "
            f"{_pm(e.get('val_acc'), 2, 100)} | {_pm(e.get('test_acc'), 2, 100)} | "
            f"{_pm(e.get('train_loss'))} | {e.get('final_failed', '—')} |"
        )
    n = next((e["val_acc"]["n"] for e in report["routes"].values() if "val_acc" in e), 0)
    lines.append(
        f"\nFinal runs at width {config['target_width']}: mean ± std over {n} seeds; training loss = "
        "the last epoch's mean training loss (as the LR sweep)."
    )
    cost = report.get("cost_fraction")
    if cost:
        lines.append(
            f"\n**Tuning cost of μTransfer / SP tuned at the target**: wall seconds "
            f"{_fraction(cost['wall_seconds'])}, FLOPs {_fraction(cost['flops'])}; training "
            f"seconds only (evaluation excluded) {_fraction(cost['train_seconds'])}."
        )
    paired = report.get("paired_mup_minus_sp")
    if paired:
        lines += [
            "",
            "| paired over seeds (μP − SP) | mean difference | paired t p | Wilcoxon p | seeds |",
            "|---|---:|---:|---:|---|",
        ]
        for metric, p in paired.items():
            scale = 100 if metric.endswith("acc") else 1
            unit = " (pp)" if scale == 100 else ""
            lines.append(
                f"| {metric}{unit} | {p['mean_diff'] * scale:+.4f} | {p['p_value']:.3g} | "
                f"{p['wilcoxon_p']:.3g} | {','.join(map(str, p['seeds']))} |"
            )
    return "\n".join(lines)


def trials_markdown(tuning: dict[str, dict[str, Any]]) -> str:
    lines = []
    for route, record in tuning.items():
        lines += [
            f"\n{_NAMES.get(route, route)} (width {record['protocol']['width']}):\n",
            "| trial | log2 lr | α | σ | val acc | status | wall s |",
            "|---:|---:|---:|---:|---:|---|---:|",
        ]
        for t in record["trials"]:
            p = t["params"]
            lines.append(
                f"| {t['number']} | {math.log2(p['lr']):.2f} | {p['readout_multiplier']:.3g} | "
                f"{p['init_scale']:.3g} | {t['value']:.4f} | {t['status']} | "
                f"{t['wall_seconds']:.1f} |"
            )
    return "\n".join(lines)


def widths_markdown(widths: dict[str, Any]) -> str:
    table, verdicts = widths["table"], widths["verdicts"]
    impls = list(table)
    horizons = sorted({h for per in table.values() for h in per})
    lines = []
    for h in horizons:
        head = "| width | " + " | ".join(
            f"{i} train loss | {i} run-mean train loss | {i} val acc %" for i in impls
        )
        lines += [f"\nAfter {h} epochs:\n", head + " |", "|---:|" + "---:|---:|---:|" * len(impls)]
        widths_h = sorted({w for i in impls for w in table[i].get(h, {})})
        for w in widths_h:
            cells = []
            for i in impls:
                cell = table[i].get(h, {}).get(w, {})
                cells += [
                    _pm(cell.get("train_loss")),
                    _pm(cell.get("train_loss_run_mean")),
                    _pm(cell.get("val_acc"), 2, 100),
                ]
            lines.append(f"| {w} | " + " | ".join(cells) + " |")
        for i in impls:
            v = verdicts.get(i, {}).get(h, {})
            for metric in ("train_loss", "train_loss_run_mean", "val_acc"):
                if metric in v:
                    verdict = (
                        "holds"
                        if v[metric]["holds"]
                        else ("fails at " + ", ".join(v[metric]["violations"]))
                    )
                    lines.append(f"- {i}, {metric}: wider is better {verdict}")
    return "\n".join(lines)


def trajectory_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dtype | Adam eps | width | steps | max abs diff, step loss | max abs diff, logits "
        "| mean abs logit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['eps']:g} | {r['width']} | {r['steps']} | "
            f"{r['max_abs_loss_diff']:.3g} | {r['max_abs_logit_diff']:.3g} | "
            f"{r['logit_scale']:.3g} |"
        )
    return "\n".join(lines)


def study_markdown(report: dict[str, Any], tuning: dict[str, dict[str, Any]]) -> str:
    c = report["config"]
    d = report["data"]
    parts = [
        f"# μTransfer study: MLP 784-w-w-10 on {c['dataset']}\n",
        f"{d['n_train']} training images, validation split {d['n_val']} (carved off the training "
        f"set), test {d['n_test']} (read once per final run); Adam, batch {c['batch_size']}, "
        f"{c['epochs']} epochs, constant LR; proxy width {c['proxy_width']}, target width "
        f"{c['target_width']}; {c['trials']} trials per route over lr ∈ "
        f"[2^{math.log2(c['lr'][0]):g}, 2^{math.log2(c['lr'][1]):g}], readout multiplier α ∈ "
        f"[2^{math.log2(c['readout_multiplier'][0]):g}, 2^{math.log2(c['readout_multiplier'][1]):g}],"
        f" init scale σ ∈ [2^{math.log2(c['init_scale'][0]):g}, 2^{math.log2(c['init_scale'][1]):g}]"
        f" (log-uniform, seeded multivariate TPE), objective: final validation accuracy.\n",
    ]
    if report["routes"]:
        parts += ["## Routes\n", routes_markdown(report)]
    if report.get("widths"):
        parts += [
            "\n## Wider is better? (the μP route's setting, every width)\n",
            f"Seeds {c['width_seeds']}; training loss = the epoch's mean training loss; validation "
            f"accuracy on the {d['n_val']} validation images. One run of {c['long_epochs']} epochs "
            f"per (implementation, width, seed): the {c['epochs']}-epoch numbers are its epoch "
            f"{c['epochs']} (constant LR).",
            widths_markdown(report["widths"]),
        ]
    if report.get("trajectory"):
        parts += ["\n## Ours against microsoft/mup, step by step\n",
                  trajectory_markdown(report["trajectory"])]  # fmt: skip
    if report.get("consistency"):
        rows = report["consistency"]
        worst = max(abs(r["diff"]) for r in rows)
        parts.append(
            f"\nConsistency: the μP route's final runs (harness loop) and the width sweep's runs "
            f"at width {c['target_width']} (study loop) agree on the epoch-{c['epochs']} training "
            f"loss to {worst:.2g} over seeds {[r['seed'] for r in rows]}."
        )
    if tuning:
        parts += ["\n## Tuning trials", trials_markdown(tuning)]
    return "\n".join(parts) + "\n"


def plot_widths(widths: dict[str, Any], path: Path) -> Path:
    """Against width, per implementation and horizon: the last epoch's training loss (mean over
    seeds, bars min–max: one late loss spike shows), the run-mean training loss and the validation
    accuracy (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    styles = {"ours": ("C0", "o", "-"), "oracle": ("C3", "x", "--")}
    panels = (
        (axes[0], "train_loss", 1.0, "minmax"),
        (axes[1], "train_loss_run_mean", 1.0, "std"),
        (axes[2], "val_acc", 100.0, "std"),
    )
    for impl, per_h in widths["table"].items():
        for k, (h, per_w) in enumerate(sorted(per_h.items())):
            color, marker, line = styles.get(impl, ("k", ".", ":"))
            ws = sorted(per_w)
            alpha = 0.45 if k == 0 and len(per_h) > 1 else 1.0
            for ax, metric, scale, bars in panels:
                cells = [per_w[w][metric] for w in ws]
                ys = [c["mean"] * scale for c in cells]
                if bars == "minmax":
                    err = [[(c["mean"] - c["min"]) * scale for c in cells],
                           [(c["max"] - c["mean"]) * scale for c in cells]]  # fmt: skip
                else:
                    err = [0.0 if c["std"] != c["std"] else c["std"] * scale for c in cells]
                ax.errorbar(ws, ys, yerr=err, color=color, marker=marker, ls=line, alpha=alpha,
                            capsize=2, label=f"{impl}, {h} epochs")  # fmt: skip
    titles = (
        "last epoch's training loss (bars: min–max)",
        "training loss averaged over the epochs",
        "validation accuracy (%)",
    )
    for (ax, metric, _, _), title in zip(panels, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if metric != "val_acc":
            ax.set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.suptitle("μP at the transferred setting: ours against microsoft/mup", fontsize=11)
    return save_figure(fig, Path(path))


def plot_tuning(tuning: dict[str, dict[str, Any]], path: Path) -> Path:
    """Each route's trials: validation accuracy against log2(lr), marker size ∝ log2 α."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (route, record) in enumerate(tuning.items()):
        xs = [math.log2(t["params"]["lr"]) for t in record["trials"]]
        ys = [t["value"] * 100 for t in record["trials"]]
        sizes = [
            20 + 8 * (math.log2(t["params"]["readout_multiplier"]) + 4) for t in record["trials"]
        ]
        ax.scatter(xs, ys, s=sizes, alpha=0.6, color=f"C{k}",
                   label=f"{_NAMES.get(route, route)} (width {record['protocol']['width']})")  # fmt: skip
    values = [t["value"] * 100 for r in tuning.values() for t in r["trials"]]
    if values:
        ax.set_ylim(max(min(values), max(values) - 10) - 0.5, max(values) + 0.5)
    ax.set_xlabel("log2(learning rate)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("tuning trials (marker size grows with α)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path))
