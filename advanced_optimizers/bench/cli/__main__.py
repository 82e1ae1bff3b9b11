"""``python -m advanced_optimizers.bench.cli``: the ``advopt`` command."""

import sys

from . import main

sys.exit(main())
