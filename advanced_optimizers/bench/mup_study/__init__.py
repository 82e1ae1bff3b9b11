"""μP studies of the harness, and their ``advopt`` commands.

* :mod:`.sweep` — the LR sweep across widths (``advopt mu-transfer``: does the optimum move?) and the
  coordinate check (``advopt coord-check``).
* :mod:`.routes` — μTransfer as the paper claims it: tune a narrow proxy and transfer, against SP
  tuned at the target width with the same budget (``advopt mu-study``).
* :mod:`.widths` — wider is better? The transferred setting at every width, in our μP and in
  microsoft/mup (the oracle), and a step-by-step trajectory comparison of the two.
* :mod:`.report` — the study's tables and plots; :mod:`.cli` — the commands.
"""

from .cli import log2_grid, register_cli
from .sweep import (
    PARAMETRIZATIONS,
    coord_check,
    lr_sweep,
    plot_coord_check,
    plot_lr_sweep,
    sweep_markdown,
    sweep_summary,
)

__all__ = [
    "PARAMETRIZATIONS",
    "coord_check",
    "log2_grid",
    "lr_sweep",
    "plot_coord_check",
    "plot_lr_sweep",
    "register_cli",
    "sweep_markdown",
    "sweep_summary",
]
