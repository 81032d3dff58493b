"""Experiments: methods compared over seeds and label ratios, on top of the library.

``grid`` (one grid cell's config, tuned settings files), ``benchmark`` (``robult benchmark``: every method x label
ratio x seed, one table), ``tuning`` (``robult tune``: hyper-parameters chosen on the validation split with an equal
budget) and ``report`` (the benchmark's tables and heatmap). The library (models, losses, data, training,
inference, evaluation) never imports this package.
"""
