"""The training engine (Lightning). Importing this package imports Lightning; ``import robult`` does not."""

from robult.training.run import RunResult, evaluate_run, train_run

__all__ = ["RunResult", "evaluate_run", "train_run"]
