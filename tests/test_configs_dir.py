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


def _leaves(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "options":  # dataset.options is free-form
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_holds_only_what_differs_from_the_defaults(path: Path) -> None:
    """configs/<dataset>.yaml name the dataset and list only the keys whose value is not the default (a key equal
    to its default would hide a later change of the default), in under 30 lines."""
    import yaml

    raw = _leaves(yaml.safe_load(path.read_text()))
    assert "dataset.name" in raw
    defaults = _leaves(load_config(None, [f"dataset.name={raw['dataset.name']}"]).model_dump(mode="json"))
    resolved = _leaves(load_config(path).model_dump(mode="json"))
    same = sorted(k for k in raw if k != "dataset.name" and resolved[k] == defaults[k])
    assert same == [], f"{path.name} repeats defaults: {same}"
    assert len(path.read_text().splitlines()) < 30


TUNED = sorted((Path(__file__).resolve().parents[1] / "configs" / "tuned").glob("*.yaml"))


@pytest.mark.parametrize("path", TUNED, ids=lambda p: p.name)
def test_tuned_settings_apply(path: Path) -> None:
    """Every (method, ratio) entry of every committed tuned-settings file validates for its method and dataset."""
    from robult.config import apply_settings, validate_config
    from robult.experiments.grid import read_tuned, tuned_overrides

    dataset = path.stem
    settings = read_tuned(path, dataset)
    assert settings and all(m in METHODS for m in settings), sorted(settings)
    for method, by_ratio in settings.items():
        for ratio in by_ratio:
            data = load_config(None, [f"dataset.name={dataset}", f"train.method={method}"]).model_dump(mode="json")
            apply_settings(data, tuned_overrides(path.parent, dataset, method, ratio), str(path))
            validate_config(data, str(path))
