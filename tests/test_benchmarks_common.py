"""The benchmarks' shared module (benchmarks/_common.py) and tools/goals.py: no training, no timing."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_dataset
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


common = _load("_common", ROOT / "benchmarks" / "_common.py")
goals_tool = _load("_goals_tool", ROOT / "tools" / "goals.py")


# -- interleaving and paired timing ---------------------------------------------------------------
def _recorder(calls: list[str], name: str, value: float = 1.0):
    def run(k: int) -> float:
        calls.append(f"{name}{k}")
        return value

    return run


def test_two_runs_alternate_which_goes_first() -> None:
    calls: list[str] = []
    got = common.interleave({"a": _recorder(calls, "a"), "b": _recorder(calls, "b")}, 4)
    assert calls == ["a0", "b0", "b1", "a1", "a2", "b2", "b3", "a3"]
    assert got == {"a": [1.0] * 4, "b": [1.0] * 4}


def test_more_runs_rotate_and_offset_shifts_the_start() -> None:
    calls: list[str] = []
    runs = {n: _recorder(calls, n) for n in "xyz"}
    common.interleave(runs, 3, offset=1)
    assert calls == ["y0", "z0", "x0", "z1", "x1", "y1", "x2", "y2", "z2"]
    with pytest.raises(ValueError):
        common.interleave({}, 1)


def test_ratio_of_exact_multiples_has_a_zero_width_interval() -> None:
    r = common.ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert r.ratios == [2.0, 2.0, 2.0]
    assert r.ratio == pytest.approx(2.0)
    assert (r.ci_low, r.ci_high) == (pytest.approx(2.0), pytest.approx(2.0))
    assert r.text() == "2.000 [2.000, 2.000]"


def test_ratio_interval_is_the_t_interval_of_log_ratios() -> None:
    rng = np.random.default_rng(0)
    b = rng.lognormal(0.0, 0.3, size=8)
    a = b * 1.3 * rng.lognormal(0.0, 0.05, size=8)
    r = common.ratio_ci(a.tolist(), b.tolist(), confidence=0.9)
    logs = np.log(a / b)
    lo, hi = sps.t.interval(0.9, len(logs) - 1, loc=logs.mean(), scale=sps.sem(logs))
    assert r.ratio == pytest.approx(math.exp(logs.mean()))
    assert (r.ci_low, r.ci_high) == (pytest.approx(math.exp(lo)), pytest.approx(math.exp(hi)))
    assert r.ci_low < r.ratio < r.ci_high
    assert r.n == 8 and r.as_dict()["n"] == 8


def test_ratio_needs_positive_paired_values() -> None:
    single = common.ratio_ci([3.0], [2.0])
    assert single.ratio == pytest.approx(1.5) and math.isnan(single.ci_low)
    assert single.text() == "1.500"
    for a, b in (([1.0, 2.0], [1.0]), ([0.0], [1.0]), ([], [])):
        with pytest.raises(ValueError):
            common.ratio_ci(a, b)


def test_paired_timing_drops_the_warm_up_and_pairs_the_rest() -> None:
    seconds = {"a": iter([9.0, 3.0, 6.0]), "b": iter([9.0, 1.0, 2.0])}
    timing = common.paired_timing(
        lambda k: next(seconds["a"]), lambda k: next(seconds["b"]), 2, warmup=1
    )
    assert timing.a == [3.0, 6.0] and timing.b == [1.0, 2.0]
    assert timing.ratio.ratios == [3.0, 3.0]


def test_timed_runs_the_function_once_per_call() -> None:
    calls: list[int] = []
    run = common.timed(lambda: calls.append(1))
    seconds = [run(0), run(1)]
    assert calls == [1, 1] and all(s >= 0.0 for s in seconds)


# -- differences over seeds ---------------------------------------------------------------------
def test_paired_diff_matches_scipy() -> None:
    a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.90, 0.91, 0.93]
    d = common.paired_diff(a, b)
    diffs = np.subtract(a, b)
    lo, hi = sps.t.interval(0.95, 3, loc=diffs.mean(), scale=sps.sem(diffs))
    assert d["mean_diff"] == pytest.approx(diffs.mean())
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert d["p_value"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert common.ci_text([0.5], scale=100) == "50.00"


# -- goals ----------------------------------------------------------------------------------------
def _report(tmp_path: Path, **kwargs) -> common.GoalReport:
    return common.GoalReport(
        "toy", tmp_path, command="python benchmarks/toy.py", commit="abc", **kwargs
    )


def test_goal_json_round_trip(tmp_path: Path) -> None:
    report = _report(tmp_path, config={"seeds": 2})
    report.add("w", "ratio 1.000 <= 1.1", 1.0, 1.1, "<=", per_seed=[1.0, 1.0])
    report.add("w", "never reached: inf", math.inf, 0.8, "<=")
    report.add("w", "custom rule", None, None, "custom", met=True, rule="by hand")
    path = report.write()
    assert path == tmp_path / "toy.goals.json"
    assert [p.name for p in tmp_path.iterdir()] == ["toy.goals.json"]  # no temporary file left
    json.loads(path.read_text(), parse_constant=pytest.fail)  # strict JSON: no Infinity / NaN
    header, goals = common.GoalReport.load(path)
    assert header["benchmark"] == "toy" and header["run"] == "full" and header["missed"] == 1
    assert header["config"] == {"seeds": 2} and "abc" in header["source"]
    assert [g.met for g in goals] == [True, False, True]
    assert goals[1].value is None  # inf is written as null
    assert goals[0] == report.goals[0]
    assert goals[2].details == {"rule": "by hand"}


def test_goal_records_are_checked() -> None:
    with pytest.raises(ValueError):
        common.Goal("b", "w", "d", 1.0, 1.0, "~", True)
    with pytest.raises(TypeError):
        common.Goal("b", "w", "d", 1.0, 1.0, "<=", 1)
    with pytest.raises(ValueError):
        common.Goal.from_dict({"benchmark": "b", "description": "d"})
    assert not common.compare(math.nan, 1.0, "<=") and not common.compare(None, 1.0, ">=")


def test_a_missed_goal_fails_the_run_unless_no_fail(tmp_path: Path, capsys) -> None:
    report = _report(tmp_path)
    report.add("w", "fast enough", 1.2, 1.1, "<=")
    report.add("w", "accurate enough", 0.99, 0.98, ">=")
    assert report.finish() == 1
    out = capsys.readouterr().out.splitlines()
    assert "MISSED: fast enough" in out and "MET: accurate enough" in out
    relaxed = _report(tmp_path, fail=False)
    relaxed.add("w", "fast enough", 1.2, 1.1, "<=")
    assert relaxed.finish() == 0
    good = _report(tmp_path)
    good.add("w", "accurate enough", 0.99, 0.98, ">=")
    assert good.finish() == 0
    with pytest.raises(RuntimeError):
        _report(tmp_path).finish()  # a benchmark that recorded no goal is a bug


def test_reduced_runs_never_write_the_committed_goals(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    common.add_arguments(parser)
    parser.add_argument("--quick", action="store_true")
    smoke = parser.parse_args(["--smoke"])
    directory = common.goals_dir(smoke, "toy")
    assert directory.resolve() != common.RESULTS_DIR.resolve() and directory.is_dir()
    directory.rmdir()
    assert common.goals_dir(parser.parse_args([]), "toy") == common.RESULTS_DIR
    mine = parser.parse_args(["--quick", "--goals-dir", str(tmp_path)])
    assert common.goals_dir(mine, "toy") == tmp_path
    report = common.report_from_args("toy", mine)
    assert report.run == "quick" and report.fail and report.goals_dir == tmp_path
    with pytest.raises(SystemExit):
        common.goals_dir(
            parser.parse_args(["--smoke", "--goals-dir", str(common.RESULTS_DIR)]), "x"
        )


# -- tools/goals.py ------------------------------------------------------------------------------
def test_goals_table_from_json(tmp_path: Path, capsys) -> None:
    for name, met in (("b_bench", False), ("a_bench", True)):
        report = _report(tmp_path)
        report.name, report.script = name, f"benchmarks/{name}.py"
        report.add("w", f"{name} goal | with a bar", 1.0, 1.0, "<=", met=met)
        report.write()
    assert goals_tool.main(["--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| benchmark | goal | status |",
        "|---|---|---|",
        "| `benchmarks/a_bench.py` | a_bench goal \\| with a bar | MET |",
        "| `benchmarks/b_bench.py` | b_bench goal \\| with a bar | MISSED |",
    ]


def test_goals_table_lists_what_was_not_measured(tmp_path: Path, capsys) -> None:
    report = _report(tmp_path)
    report.add("w", "measured", 1.0, 1.0, "<=")
    report.config["not_measured"] = ["accuracy: skipped"]
    report.write()
    assert goals_tool.main(["--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("| accuracy: skipped | NOT MEASURED |")


def test_goals_table_refuses_smoke_runs_and_broken_files(tmp_path: Path, capsys) -> None:
    assert goals_tool.main(["--dir", str(tmp_path)]) == 1  # no goals file at all
    smoke = common.GoalReport("toy", tmp_path, run="smoke", commit="abc")
    smoke.add("w", "d", 1.0, 1.0, "<=")
    smoke.write()
    assert goals_tool.main(["--dir", str(tmp_path)]) == 1
    assert "smoke run" in capsys.readouterr().err
    (tmp_path / "toy.goals.json").write_text('{"goals": [{"description": "d"}]}')
    assert goals_tool.main(["--dir", str(tmp_path)]) == 1
    assert "boolean 'met'" in capsys.readouterr().err


def test_committed_goal_files_make_a_table(capsys) -> None:
    assert goals_tool.main([]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows and all(row.endswith(("| MET |", "| MISSED |", "| NOT MEASURED |")) for row in rows)


# -- data and the scripts themselves --------------------------------------------------------------
def test_synthetic_dataset_is_the_test_suites_toy_dataset() -> None:
    mine, theirs = common.synthetic_mnist(64, 32, seed=3), toy_dataset(64, 32, seed=3)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(mine, field), getattr(theirs, field))
    assert mine.input_shape == (1, 28, 28) and mine.num_classes == 10


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_every_benchmark_uses_the_shared_module_and_not_tests(script: Path) -> None:
    source = script.read_text()
    tree = ast.parse(source)
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "_common" in imported
    assert not {"conftest", "tests"} & {name.split(".")[0] for name in imported if name}
    assert "test_" not in " ".join(n for n in imported if n) and '"tests"' not in source
    assert "add_arguments(" in source and ".finish()" in source
