"""The default CPU thread count (train.num_threads unset) and the oversubscription warning."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from robult.config import load_config
from robult.training.run import train_run
from robult.utils import threads
from robult.utils.threads import SPLIT_WORTH_MACS, choose_threads, oversubscription


def test_choice_follows_model_size_cores_and_load() -> None:
    small = choose_threads(300_000, 128, cores=8, load=0.0)  # the default MLP at batch 128: ~4e7 multiply-adds
    assert small.threads == 1 and "too small" in small.reason
    big = int(SPLIT_WORTH_MACS / 128) + 1
    assert choose_threads(big, 128, cores=8, load=0.0).threads == 8
    assert choose_threads(big, 128, cores=8, load=5.2).threads == 2  # floor(8 - 5.2) idle cores
    busy = choose_threads(big, 128, cores=2, load=0.5)
    assert busy.threads == 1 and "busy" in busy.reason  # one idle core: nothing to split over
    assert choose_threads(big, 128, cores=1, load=0.0).threads == 1


def test_oversubscription_warning() -> None:
    assert oversubscription(1, cores=2, load=9.0) is None  # one thread never waits for a sibling
    assert oversubscription(2, cores=4, load=1.0) is None
    text = oversubscription(2, cores=2, load=5.5)
    assert text is not None and "likely oversubscribed" in text and "train.num_threads=1" in text


class _Threads(L.Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.seen.append(torch.get_num_threads())


@pytest.mark.parametrize(("num_threads", "load"), [(None, 0.0), (2, 9.0)])
def test_a_run_uses_the_choice_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_threads: int | None, load: float
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "current_load", lambda: load)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    overrides = ["dataset.options.n_samples=200", "train.max_epochs=1", "eval.rates=[0.0]", f"out_dir={tmp_path}"]
    if num_threads is not None:
        overrides.append(f"train.num_threads={num_threads}")
    probe = _Threads()
    with pytest.warns(UserWarning, match="likely oversubscribed") if num_threads else _no_oversubscription_warning():
        train_run(load_config(None, overrides), callbacks=[probe])
    assert set(probe.seen) == {1 if num_threads is None else 2}  # default: the small model runs on one thread
    assert torch.get_num_threads() == before  # restored after the run


class _no_oversubscription_warning:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._seen = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        assert not [w for w in self._seen if "oversubscribed" in str(w.message)]
