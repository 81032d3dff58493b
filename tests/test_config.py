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
    # Robult's lambda_rec (a sum over features) and shared_private's lambda_rec_mean (a mean) are two keys
    assert [c.__name__ for c in union["lambda_rec"].owners] == ["RobultLossConfig"]
    assert [c.__name__ for c in union["lambda_rec_mean"].owners] == ["SharedPrivateLossConfig"]
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
    assert "not used" not in rows["loss.lambda_sim"] and "not used" not in rows["loss.lambda_rec_mean"]
    assert "not used" not in {k: m for k, _, m in describe_config("robult")}["loss.lambda_lb"]
    assert all("not used" not in m for _, _, m in describe_config())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dropout=.nan", "key 'model.dropout': Input should be a finite number (got nan)"),
        ("model.dropout=1.0", "key 'model.dropout': Input should be less than 1"),
        ("train.lr=.inf", "key 'train.lr': Input should be a finite number (got inf)"),
        ("train.weight_decay=.inf", "key 'train.weight_decay': Input should be a finite number"),
        ("loss.temperature=.inf", "key 'loss.temperature': Input should be a finite number"),
        ("loss.lambda_lb=.inf", "key 'loss.lambda_lb': Input should be a finite number"),
        ("loss.lambda_lb=-.inf", "key 'loss.lambda_lb': Input should be a finite number"),
        ("train.devices=0", "key 'train.devices': Input should be greater than or equal to 1 (got 0)"),
        ("train.devices=true", "key 'train.devices': Input should be a valid integer (got True)"),
        ("train.max_epochs=true", "key 'train.max_epochs': Input should be a valid integer (got True)"),
        ("train.max_epochs=2.5", "key 'train.max_epochs': Input should be a valid integer (got 2.5)"),
        ("train.lr=true", "key 'train.lr': Input should be a valid number (got True)"),
        ("train.seed=-1", "key 'train.seed': Input should be greater than or equal to 0 (got -1)"),
        ("train.seed=4294967296", "key 'train.seed': Input should be less than or equal to 4294967295"),
        ("eval.mask_seed=-1", "key 'eval.mask_seed': Input should be greater than or equal to 0"),
        ("eval.rates=[.nan]", "key 'eval.rates.0': Input should be a finite number"),
        ("model.encoder_hidden=[true]", "key 'model.encoder_hidden.0': Input should be a valid integer"),
        ("dataset.options.noise=.inf", "key 'dataset.options': option 'noise' must be a finite number"),
    ],
)
def test_every_number_is_checked_before_a_run_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_integers_and_numbers_of_the_right_type_still_pass() -> None:
    cfg = load_config(None, ["train.lr=1", "train.devices=2", "train.devices=-1", "model.encoder_hidden=[8, 4]"])
    assert cfg.train.lr == 1.0 and cfg.train.devices == -1 and cfg.model.encoder_hidden == (8, 4)
    assert load_config(None, ["train.devices=auto", "name="]).train.devices == "auto"


def test_a_dataset_option_out_of_range_names_it() -> None:
    from robult.training.run import load_bundle

    with pytest.raises(ValueError, match=r"dataset option 'n_samples': must be >= 1, got -5"):
        load_bundle(load_config(None, ["dataset.options.n_samples=-5"]))


def test_cli_refuses_a_non_finite_number_and_writes_nothing(tmp_path: Path) -> None:
    """`robult train` with its defaults (progress bar, logger, threads): one line naming the key, nothing written."""
    from typer.testing import CliRunner

    from robult.cli import app

    out = tmp_path / "runs"
    for bad, key in (
        ("loss.temperature=.inf", "loss.temperature"),
        ("train.devices=0", "train.devices"),
        ("dataset.options.n_samples=-5", "n_samples"),
    ):
        args = ["train", "--set", bad, "--set", "train.max_epochs=1", "--set", f"out_dir={out}"]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], res.output
        assert not out.exists()
