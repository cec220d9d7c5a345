"""`rankseg-eval`: argmax vs RankSEG on a model's probabilities, scored per case, with reports.

The command-line entry is `rankseg_plugins.eval.cli:main`. This package imports MONAI, nibabel, matplotlib,
tqdm and scipy only where it needs them; nothing in the `rankseg_plugins` core imports it.
"""
