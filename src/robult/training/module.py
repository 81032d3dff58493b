"""The one LightningModule for every method: a model plus a loss.

Model selection rule (the same for every method and metric): after each training epoch the model scores the
validation split on **every non-empty modality subset** with the dataset's primary metric; the selection score
``val/score`` is the mean over subsets. The checkpoint with the best score (first one on ties) is the run's model,
and early stopping watches the same score. All reported metrics come from that one checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from robult.batch import Batch
from robult.evaluation.metrics import compute_metrics_many
from robult.losses.base import MethodLoss
from robult.models.base import MultimodalModel
from robult.specs import TaskSpec, all_subsets
from robult.training.sampler import drop_modalities
from robult.utils import distributed as dist_utils


class MethodModule(L.LightningModule):
    """Trains ``model`` with ``criterion`` and scores validation subsets.

    Args:
        model: the method's model (:class:`robult.models.base.MultimodalModel`: ``forward(batch,
            with_reconstruction, validate)``, ``predict_subsets``, ``after_fit``).
        criterion: the method's loss (:class:`robult.losses.base.MethodLoss`: ``criterion(output, batch, epoch) ->
            result`` with ``.total``, ``.log_dict(prefix)`` and ``.diagnostics``; ``needs_reconstruction``).
        task: the task spec.
        modality_names: modality order.
        primary_metric: metric of the selection score.
        lr, weight_decay: AdamW options.
        seed: base seed; the global torch RNG is reseeded before every epoch's first batch from ``(seed, epoch)``
            so a resumed run draws the same dropout masks.
        modality_dropout: training-time modality dropout rate (0: off).
        check_batches: let the model check every batch (:func:`robult.batch.validate_batch`). ``train_run`` checks
            the training and validation splits once up front (:func:`robult.batch.check_dataset`) and turns this
            off, which saves ~4% of a training step (pie).
    """

    def __init__(
        self,
        model: MultimodalModel,
        criterion: MethodLoss,
        task: TaskSpec,
        modality_names: list[str],
        primary_metric: str,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        modality_dropout: float = 0.0,
        check_batches: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.task = task
        self.names = list(modality_names)
        self.subsets = all_subsets(self.names)
        self.primary_metric = primary_metric
        self.lr, self.weight_decay = lr, weight_decay
        self.seed = seed
        self._forward_kwargs: dict[str, bool] = {"validate": check_batches}
        self.modality_dropout = modality_dropout
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._diag: dict[str, list[float]] = {}  # diagnostics key -> [sum, count] over the epoch's defined values

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, Batch) else super().transfer_batch_to_device(batch, device, 0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self._seed_epoch()

    def _seed_epoch(self) -> None:
        """Reseed the global torch RNG from ``(seed, epoch)`` before an epoch's first batch.

        Done at the first batch rather than in ``on_train_epoch_start`` because the training DataLoader's iterator
        draws its base seed from the global RNG, and Lightning creates it after that hook in every epoch but the
        first one of a ``fit`` call (so also the first one after a resume): the RNG state at the first batch would
        depend on whether the run was resumed. The draw repeated here for every epoch but epoch 0 is the
        iterator's draw of an uninterrupted run, so runs give the very numbers they gave before this change."""
        torch.manual_seed(self.seed * 1_000_003 + self.current_epoch)
        if self.current_epoch > 0:
            torch.empty((), dtype=torch.int64).random_()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.modality_dropout > 0:
            batch = batch.with_present(drop_modalities(batch.present, self.modality_dropout))
        # a loss that does not read the reconstruction (robult with lambda_rec = 0) saves the branch
        output = self.model(batch, with_reconstruction=self.criterion.needs_reconstruction, **self._forward_kwargs)
        n_batches = max(1, int(self.trainer.num_training_batches)) if self.trainer else 1
        epoch = self.current_epoch + batch_idx / n_batches
        result = self.criterion(output, batch, epoch=epoch)
        # under DDP each rank's loss parts are its share of the global mean (utils.distributed.mean_over_ranks), so
        # the logged epoch value is their mean over ranks (sync_dist; nothing happens in one process)
        self.log_dict(result.log_dict("train/"), on_step=False, on_epoch=True, batch_size=batch.size, sync_dist=True)
        for key, value in result.diagnostics.items():  # each loss reports its own; NaN: not defined by this batch
            acc = self._diag.setdefault(key, [0.0, 0.0])
            if value == value:
                acc[0] += value
                acc[1] += 1.0
        if self._is_last_batch(batch_idx):
            self._log_diagnostics()
        return result.total

    def _is_last_batch(self, batch_idx: int) -> bool:
        """Whether this is the epoch's last training batch: the same answer on every rank, as every rank's
        loader yields as many batches (:class:`robult.training.sampler.SemiSupervisedBatchSampler`)."""
        if self.trainer is None:
            return False
        n_batches = self.trainer.num_training_batches
        if isinstance(n_batches, int | float) and math.isfinite(n_batches):
            return batch_idx + 1 >= n_batches
        return bool(self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)

    def _log_diagnostics(self) -> None:
        """Log each diagnostic's epoch mean over the batches that define it (NaN if none did), over every rank:
        one all-reduce of the sums and counts. (Lightning's weighted epoch mean would floor the mean of integer
        weights over ranks, and a key logged by one rank only would make the ranks' reductions disagree.) Every
        rank holds the same keys: a loss reports every key on every batch, NaN where undefined.

        Called from the epoch's last ``training_step``, never from an epoch-end hook. Under DDP every collective
        must run in the same order on every rank. The training step is the one place every rank runs in lockstep
        whatever the callbacks, loggers and progress bars do; an epoch-end hook is not: the progress bar, which
        exists on rank 0 only, computes the epoch's ``sync_dist`` metrics (one all-reduce each) in its own
        ``on_train_epoch_end``, which Lightning runs before the module's, while the other ranks compute them after
        it. An all-reduce in ``on_train_epoch_end`` thus met a different collective on each rank and the run hung.
        The values are logged for the epoch (``on_epoch=True``, one value each, so Lightning's epoch mean is the
        value itself) without ``sync_dist``: every rank already holds the reduced value, so Lightning adds no
        collective of its own for them."""
        if not self._diag:
            return
        keys = sorted(self._diag)
        sums = dist_utils.all_reduce_sum(torch.tensor([self._diag[k] for k in keys], dtype=torch.float64,
                                                      device=self.device))  # fmt: skip
        self._diag.clear()
        for key, (total, count) in zip(keys, sums.tolist(), strict=True):
            self.log(key, total / count if count else math.nan, on_step=False, on_epoch=True, batch_size=1)

    def on_train_epoch_start(self) -> None:
        self._diag.clear()  # an epoch cut short (interrupted) leaves nothing for the next one

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        output = self.model(batch, with_reconstruction=False, **self._forward_kwargs)
        preds = self.model.predict_subsets(output, self.subsets)
        # only labeled rows are scored: an unlabeled validation row may hold any label value (e.g. -1)
        valid = preds.valid & batch.labeled[None].to(preds.valid.device)
        self._val_outputs.append((preds.predictions.float().cpu(), valid.cpu(), batch.target.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        preds = torch.cat([p for p, _, _ in self._val_outputs], dim=1)
        valid = torch.cat([v for _, v, _ in self._val_outputs], dim=1)
        target = torch.cat([t for _, _, t in self._val_outputs])
        self._val_outputs.clear()
        metrics = compute_metrics_many(preds, valid, target, self.task)
        scores = {"+".join(s): m[self.primary_metric] for s, m in zip(self.subsets, metrics, strict=True) if m}
        if not scores:
            raise ValueError("validation split: no labeled sample to score (model selection needs labels)")
        score = sum(scores.values()) / len(scores)
        self.log("val/score", score, prog_bar=True)
        self.log_dict({f"val/{k}": v for k, v in scores.items()})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning calls this with the checkpoint it resumes from (``--resume``) before it loads the weights: a
        checkpoint whose keys or shapes do not fit this module (another dataset, modality set or model config) is
        one line naming the file and the first key that does not fit."""
        from robult.training.checkpoint import check_state_fits

        check_state_fits(self, checkpoint.get("state_dict") or {}, self.trainer.ckpt_path or "the checkpoint")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
