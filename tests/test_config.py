"""Validated configs: overrides, one-line errors naming the key or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from robult.config import ConfigError, config_to_yaml, load_config


def test_defaults_overrides_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=0.01", "model.projector_hidden=[64, 32]", "dataset.options.n_samples=500"])
    assert cfg.train.lr == 0.01
    assert cfg.model.projector_hidden == (64, 32)
    assert cfg.dataset.options == {"n_samples": 500}
    assert cfg.loss.temperature == 0.5 and cfg.loss.kernel == "rbf"  # METHOD.md defaults
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("train:\n  lrr: 1\n", [], "unknown key 'train.lrr'"),
        ("train:\n  lr: fast\n", [], "key 'train.lr': Input should be a valid number"),
        ("", ["model.aggregate=max"], "aggregate"),
        ("", ["train.method=nope"], "key 'train.method': unknown method 'nope'"),
        ("", ["loss.kernel=gauss"], "key 'loss.kernel': Input should be 'rbf'"),
        ("- a\n- b\n", [], "the top level must be a mapping"),
        ("", ["trainlr"], "expected KEY=VALUE"),
        ("", ["eval.rates=[0.5, 1.5]"], "rates must lie in [0, 1)"),
        ("", ["loss.sigma_min=0"], "key 'loss.sigma_min': Input should be greater than 0"),
        ("", ["loss.temperature=0"], "key 'loss.temperature': Input should be greater than 0"),
        ("", ["loss.ema=1.0"], "key 'loss.ema': Input should be less than 1"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, yaml_text: str, overrides: list[str], message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises((ConfigError, ValueError)) as info:
        cfg = load_config(path, overrides)
        # model/loss values are checked by the model's own config when built
        from robult.losses.robult import RobultLossConfig  # noqa: F401
        from robult.methods import build_method
        from robult.specs import ModalitySpec, TaskSpec

        build_method(
            cfg.train.method,
            [ModalitySpec("a", "vector", (2,))],
            TaskSpec("multiclass", num_classes=2),
            cfg.model.model_dump(),
            cfg.loss.model_dump(),
        )
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config("nope.yaml")


def test_apply_settings_sets_nested_keys_like_set() -> None:
    """Tuned overrides and ``--set`` share one setter: deeper keys land in nested sections, not as dotted names."""
    from robult.config import apply_overrides, apply_settings

    a = load_config(None, []).model_dump(mode="json")
    b = load_config(None, []).model_dump(mode="json")
    apply_settings(a, {"dataset.options.n_samples": 600, "train.lr": 0.01}, "tuned.yaml")
    apply_overrides(b, ["dataset.options.n_samples=600", "train.lr=0.01"])
    assert a == b and a["dataset"]["options"] == {"n_samples": 600}
    with pytest.raises(ConfigError, match=r"tuned\.yaml: 'lr' is not a section"):
        apply_settings(a, {"train.lr.x": 1}, "tuned.yaml")


def test_loss_dataclass_checks_the_same_bounds() -> None:
    from robult.losses.robult import RobultLossConfig

    with pytest.raises(ValueError, match=r"sigma_min must be > 0\.0, got -0\.1"):
        RobultLossConfig(sigma_min=-0.1)
    with pytest.raises(ValueError, match=r"temperature must be > 0\.0, got 0"):
        RobultLossConfig(temperature=0)


def test_loss_section_is_the_union_of_the_loss_configs() -> None:
    """Every loss config's keys are in the ``loss`` section with their type, default, bounds and a meaning; a key
    two configs share is declared identically in both."""
    import dataclasses
    import typing

    from robult.config import LossSection
    from robult.losses.options import LOSS_CONFIGS, loss_fields
    from robult.utils.bounds import field_bounds

    union = loss_fields()
    assert list(LossSection.model_fields) == list(union)
    for cls in LOSS_CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            info = LossSection.model_fields[f.name]
            assert info.default == f.default and info.annotation == hints[f.name], (cls.__name__, f.name)
            assert field_bounds(union[f.name].field) == field_bounds(f), (cls.__name__, f.name)
            assert info.description, f.name
    # the baselines' weights are their own keys, not Robult's
    assert {"lambda_pl", "lambda_nce", "lambda_sim", "lambda_diff"} <= set(union)
    assert union["lambda_rec"].owners[0].__name__ == "RobultLossConfig" and len(union["lambda_rec"].owners) == 2
    with pytest.raises(ConfigError, match=r"key 'loss\.lambda_diff': Input should be greater than or equal to 0"):
        load_config(None, ["loss.lambda_diff=-1"])


@pytest.mark.parametrize(
    ("annotation", "default", "metadata", "what"),
    [(int, 1, {"ge": 0.0}, "type"), (float, 2.0, {"ge": 0.0}, "default"), (float, 1.0, {"gt": 0.0}, "bounds")],
)
def test_a_key_shared_by_two_loss_configs_must_match(annotation: type, default: object, metadata: dict, what: str):
    import dataclasses

    from robult.losses.options import loss_fields

    first = dataclasses.make_dataclass(
        "First", [("weight", float, dataclasses.field(default=1.0, metadata={"ge": 0.0}))]
    )
    second = dataclasses.make_dataclass(
        "Second", [("weight", annotation, dataclasses.field(default=default, metadata=metadata))]
    )
    assert loss_fields((first, first))["weight"].default == 1.0
    with pytest.raises(TypeError, match=rf"loss option 'weight' has {what} .* in First but .* in Second"):
        loss_fields((first, second))


def test_config_show_marks_the_loss_keys_a_method_does_not_use() -> None:
    from robult.config import describe_config

    rows = {k: m for k, _, m in describe_config("shared_private")}
    assert "[not used by method 'shared_private']" in rows["loss.lambda_lb"]
    assert "not used" not in rows["loss.lambda_sim"] and "not used" not in rows["loss.lambda_rec"]
    assert "not used" not in {k: m for k, _, m in describe_config("robult")}["loss.lambda_lb"]
    assert all("not used" not in m for _, _, m in describe_config())
