"""The experiment harness: data, models, the method interface, training, statistics and the CLI.

Needs the ``bench`` extra (numpy, scipy, pandas, matplotlib, tqdm); the algorithms themselves need
torch only.
"""
