"""State-dict checks run before anything is loaded, so a wrong state fails whole and changes nothing.

``torch.optim.Optimizer.load_state_dict`` checks only the number of groups and of parameters per
group: a state saved for a model of another size loads and fails at the next ``step()``. These
checks name what is wrong at load time instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["check_base_state", "describe_state", "require_keys"]


def describe_state(state_dict: Any) -> str:
    """What a state dict looks like, for error messages ("a FER state", "a plain torch state")."""
    if not isinstance(state_dict, Mapping):
        return f"a {type(state_dict).__name__}, not a state dict"
    if "algorithm" in state_dict:
        return f"the state of a {state_dict['algorithm']!r} optimizer"
    if {"state", "param_groups"} <= set(state_dict):
        return "the state of a plain torch.optim optimizer"
    return f"a dict with keys {sorted(map(str, state_dict))}"


def require_keys(state_dict: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the missing keys unless all ``keys`` are present."""
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise ValueError(f"{what} lacks {missing}: it is {describe_state(state_dict)}")


def check_base_state(optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``state_dict`` cannot be a state of ``optimizer``'s parameters.

    Checks the structure (groups and their parameter counts, as torch does) and, for every
    parameter, that each per-parameter state tensor of the parameter's rank (Adam's moments, SGD's
    momentum buffer) has the parameter's shape.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    require_keys(state_dict, ("state", "param_groups"), "the base optimizer's state_dict")
    groups, saved = optimizer.param_groups, state_dict["param_groups"]
    if len(groups) != len(saved):
        raise ValueError(
            f"state_dict has {len(saved)} parameter groups, this optimizer has {len(groups)}"
        )
    params = [p for g in groups for p in g["params"]]
    ids = [i for g in saved for i in g["params"]]
    for index, (group, saved_group) in enumerate(zip(groups, saved, strict=True)):
        if len(group["params"]) != len(saved_group["params"]):
            raise ValueError(
                f"state_dict's group {index} has {len(saved_group['params'])} parameters, this "
                f"optimizer's has {len(group['params'])}"
            )
    by_id = dict(zip(ids, params, strict=True))
    for pid, entries in state_dict["state"].items():
        param = by_id.get(pid)
        if param is None or not isinstance(entries, Mapping):
            continue
        for key, value in entries.items():
            if (
                isinstance(value, torch.Tensor)
                and value.dim() == param.dim()
                and value.dim() > 0
                and value.shape != param.shape
            ):
                raise ValueError(
                    f"state_dict was saved for another model: its {key!r} of parameter {pid} has "
                    f"shape {tuple(value.shape)}, the parameter has {tuple(param.shape)}"
                )
