"""Compare several methods over several seeds and write results, a table and plots.

The experiment — the grid of (method, seed) runs, its protocol, its presets and tuned settings — is
:mod:`.experiment`; the output directory's layout, its lock and the checks before resuming are
:mod:`.results_dir`. Both are re-exported here.

Every file is written atomically. Re-running into the same directory resumes: finished
(method, seed) runs are loaded, not redone, and an interrupted run continues from its last epoch.
A run that failed (diverged, or stayed at chance; see :mod:`.train`) is finished too: its file is
final and it is not retried unless ``retry_failed`` (``advopt compare --retry-failed``) asks.

Under ``torchrun`` rank 0 does the checks that write (probe, lock, ``experiment.json``) and every
rank the read-only ones; a failure on any rank stops every rank before training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from .._validation import check_choice as check_choice
from .._validation import check_int as check_int
from .atomic import write_json
from .data import DATASETS as DATASETS
from .data import VALIDATION_DEFAULTS as VALIDATION_DEFAULTS
from .data import Dataset, load_dataset
from .device import DEVICES as DEVICES
from .device import resolve_device
from .distributed import barrier, is_main, raise_together, world_size
from .experiment import PRESETS as PRESETS
from .experiment import TUNING_MUST_MATCH as TUNING_MUST_MATCH
from .experiment import Experiment
from .experiment import apply_tuning as apply_tuning
from .methods import available_methods as available_methods
from .methods import get_method as get_method
from .models import ARCHITECTURES as ARCHITECTURES
from .results_dir import _START_FRESH as _START_FRESH
from .results_dir import GRID_KEYS as GRID_KEYS
from .results_dir import (
    _check_out_dir,
    _check_runs,
    _experiment_record,
    _merge_experiment,
    _remove_if_unused,
    _run_paths,
    output_lock,
)
from .results_dir import _check_saved_config as _check_saved_config
from .results_dir import _fresh as _fresh
from .results_dir import _legacy as _legacy
from .results_dir import _run_files as _run_files
from .results_dir import _settings as _settings
from .results_dir import load_runs as load_runs
from .results_dir import read_run_file as read_run_file
from .train import FINGERPRINT_FIELDS as FINGERPRINT_FIELDS
from .train import RunConfig, RunResult, train_run
from .train import config_differences as config_differences
from .train import data_id as data_id
from .train import read_checkpoint as read_checkpoint

__all__ = ["PRESETS", "Experiment", "apply_tuning", "load_runs", "run_experiment"]
# The names imported above as ``name as name`` are re-exported: this module held them before the
# experiment moved to :mod:`.experiment` and the output directory's checks to :mod:`.results_dir`.


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Where the numbers were measured (``device``: the one trained on, if known)."""
    return {
        "device": str(device) if device is not None else "unknown",
        "world_size": world_size(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def prepare_data(
    experiment: Experiment,
    data_dir: str | None = None,
    check_sums: bool = True,
    dataset: Dataset | None = None,
) -> Dataset:
    """The experiment's data: validation split carved off the training set, then the subsets.

    ``dataset``: these tensors instead of loading ``experiment.dataset``. If it already has a
    validation split, that split must be ``experiment.validation`` samples; otherwise the last
    ``experiment.validation`` training samples become it.
    """
    if dataset is None:
        dataset = load_dataset(experiment.dataset, data_dir=data_dir, check_sums=check_sums)
    dataset = dataset.with_validation(experiment.validation, "the experiment")
    return dataset.subset(experiment.n_train, experiment.n_test)


def run_experiment(
    experiment: Experiment,
    out_dir: str | os.PathLike,
    data_dir: str | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    check_sums: bool = True,
    retry_failed: bool = False,
) -> list[RunResult]:
    """Run (or resume) every (method, seed) of ``experiment``; write all result files.

    ``dataset``: use these tensors instead of loading ``experiment.dataset`` (see
    :func:`prepare_data`: the validation split is carved off it, then its first
    ``experiment.n_train`` / ``n_test`` samples are used when those are set). ``check_sums``: see
    :func:`~.data.load_dataset`. ``retry_failed``: train again the runs whose file records a
    failure (by default a failed run is final). Every check described in :mod:`.results_dir` runs
    before the first epoch; on failure nothing in ``out_dir`` has changed.
    """
    out = Path(out_dir)
    with contextlib.ExitStack() as stack:
        finished, configs, dataset = _prepare(stack, experiment, out, data_dir, dataset, check_sums)
        if retry_failed:
            finished = {key: run for key, run in finished.items() if run.ok}
        return _run_all(experiment, out, configs, finished, dataset, progress)


def _prepare(
    stack: contextlib.ExitStack,
    experiment: Experiment,
    out: Path,
    data_dir: str | None,
    dataset: Dataset | None,
    check_sums: bool,
) -> tuple[dict[tuple[str, int], RunResult], dict[tuple[str, int], RunConfig], Dataset]:
    """Every check before training (see :mod:`.results_dir`), together on every rank."""
    main = is_main()
    error: BaseException | None = None
    created = False
    finished: dict[tuple[str, int], RunResult] = {}
    configs: dict[tuple[str, int], RunConfig] = {}
    try:
        device = resolve_device(experiment.device)
        record = _experiment_record(experiment, device)
        update = None
        if main:
            created = _check_out_dir(out, experiment.methods)
            stack.enter_context(output_lock(out))
            update = _merge_experiment(out, record)
        dataset = prepare_data(experiment, data_dir, check_sums, dataset)
        configs = {
            (m, s): experiment.run_config(m, s, dataset, device)
            for s in experiment.seeds
            for m in experiment.methods
        }
        finished = _check_runs(out, configs)
        if main and update is not None:
            write_json(out / "experiment.json", update)
    except (ValueError, TypeError, OSError) as exc:
        error = exc
        if created:
            stack.close()  # release the lock before removing the directory we made
            _remove_if_unused(out)
    raise_together(error)
    return finished, configs, dataset  # type: ignore[return-value]


def _run_all(
    experiment: Experiment,
    out: Path,
    configs: dict[tuple[str, int], RunConfig],
    finished: dict[tuple[str, int], RunResult],
    dataset: Dataset,
    progress: bool,
) -> list[RunResult]:
    from tqdm.auto import tqdm

    from .report import write_outputs

    main = is_main()
    device = resolve_device(experiment.device)
    results: list[RunResult] = []
    bar = tqdm(
        total=len(configs) * experiment.epochs, unit="epoch", disable=not progress, desc="compare"
    )
    for (method, seed), config in configs.items():
        done_path, ckpt_path = _run_paths(out, method, seed)
        result = finished.get((method, seed))
        if result is None:
            bar.set_description(f"{method} seed {seed}")
            shown = 0

            def show(record: dict[str, Any]) -> None:
                nonlocal shown
                shown += 1
                bar.update(1)
                acc = record["val_acc"] if "val_acc" in record else record["test_acc"]
                bar.set_postfix(acc=f"{acc:.4f}", loss=f"{record['train_loss']:.3f}")

            barrier()  # every rank starts from the same checkpoint
            result = train_run(config, dataset, checkpoint=ckpt_path, on_epoch=show)
            if main:
                write_json(done_path, result.to_dict())
                ckpt_path.unlink(missing_ok=True)
            bar.update(experiment.epochs - shown)  # epochs restored from a checkpoint
        else:
            bar.update(experiment.epochs)
        results.append(result)
    bar.close()
    barrier()
    if main:
        resolved = dataclasses.replace(experiment, device=device.type)
        write_outputs(out, resolved, results, environment(device))
    return results
