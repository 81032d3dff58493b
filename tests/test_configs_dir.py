"""Every config committed under configs/ validates and names a registered dataset and method."""

from __future__ import annotations

from pathlib import Path

import pytest

from robult.config import load_config
from robult.data.registry import registered_datasets
from robult.methods import METHODS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_exist() -> None:
    assert any(p.name == "synthetic.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.dataset.name in registered_datasets()
    assert cfg.train.method in METHODS
