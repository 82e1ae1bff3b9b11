"""``advopt methods`` and ``advopt data``: what can be compared, and on which data."""

from __future__ import annotations

import argparse

from .args import _TRUST_HELP


def _add_methods(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "methods",
        help="list the registered methods",
        description="List every method compare can train, with a one-line summary.",
    )
    p.set_defaults(func=cmd_methods)


def cmd_methods(args: argparse.Namespace) -> int:
    from ..methods import get_method, method_summaries

    summaries = method_summaries()
    width = max(map(len, summaries))
    for name, summary in summaries.items():
        print(f"{name:<{width}}  lr={get_method(name).default_lr:<8g} {summary}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    from ..data import DATASETS

    p = sub.add_parser(
        "data",
        help="find (or download) a dataset and describe it",
        description="Locate a dataset as compare would (downloading it if allowed) "
        "and print its sizes.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--data-dir", default=None, help="see compare --data-dir")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.add_argument("--trust-local-data", action="store_true", help=_TRUST_HELP)
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    from ..data import load_dataset

    ds = load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        download_ok=not args.no_download,
        check_sums=not args.trust_local_data,
    )
    print(
        f"{ds.name}: train {tuple(ds.x_train.shape)}, test {tuple(ds.x_test.shape)}, "
        f"{ds.num_classes} classes"
    )
    return 0
