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


def _dotted_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and key != "options":  # dataset.options is free-form
            keys |= _dotted_keys(value, f"{prefix}{key}.")
    return keys


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_lists_every_key(path: Path) -> None:
    """configs/<dataset>.yaml are full dumps users copy from: a key added to the schema must appear there too."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    full = load_config(path).model_dump(mode="json")
    assert sorted(_dotted_keys(full) - _dotted_keys(raw)) == []


TUNED = sorted((Path(__file__).resolve().parents[1] / "configs" / "tuned").glob("*/*.yaml"))


@pytest.mark.parametrize("path", TUNED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tuned_config_applies(path: Path) -> None:
    """Every `robult tune` winner committed under configs/tuned/<dataset>/ loads and validates for its method."""
    import yaml

    from robult.config import apply_settings, validate_config
    from robult.tuning import load_tuned

    doc = yaml.safe_load(path.read_text())
    assert path.name == f"{doc['method']}-r{doc['label_ratio']:g}.yaml" and path.parent.name == doc["dataset"]
    data = load_config(None, [f"dataset.name={doc['dataset']}", f"train.method={doc['method']}"]).model_dump(
        mode="json"
    )
    apply_settings(data, load_tuned(path.parent, doc["method"], doc["label_ratio"], doc["dataset"]), str(path))
    validate_config(data, str(path))
