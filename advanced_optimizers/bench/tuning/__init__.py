"""The parts of ``advopt tune`` (:mod:`..tune`, which runs the trials and re-exports these).

* :mod:`.config` — a study's settings (:class:`~.config.TuneConfig`) and each method's search space;
* :mod:`.sampling` — the sampler, re-seeded for every trial, and the pruner;
* :mod:`.storage` — the Optuna storage shared by several workers, and the studies in it;
* :mod:`.record` — the ``tuning.json`` record and its table.
"""
