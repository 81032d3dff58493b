"""Validated configs: overrides, one-line errors naming the key or file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

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


@pytest.mark.parametrize("section", ["model", "loss"])
def test_model_and_loss_sections_are_the_union_of_the_methods_configs(section: str) -> None:
    """Every registered method's model and loss config keys are in the ``model`` / ``loss`` section with their type,
    default, bounds and a meaning; a key two configs share is declared identically in both."""
    import dataclasses
    import typing

    from robult.config import RunConfig, strict_numbers
    from robult.methods import METHODS, section_fields
    from robult.utils.bounds import field_bounds

    fields_of = RunConfig.model_fields[section].annotation.model_fields
    union = section_fields(section)
    assert list(fields_of) == list(union)
    for method in METHODS.values():
        cls = method.config_class(section)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            info = fields_of[f.name]
            assert info.default == f.default, (cls.__name__, f.name)
            assert info.annotation in (hints[f.name], strict_numbers(hints[f.name])), (cls.__name__, f.name)
            assert field_bounds(union[f.name].field) == field_bounds(f), (cls.__name__, f.name)
            assert info.description, f.name


def test_the_sections_keep_their_keys_and_each_weight_its_own_meaning() -> None:
    from robult.config import LossSection, ModelSection
    from robult.methods import section_fields
    from robult.models import RobultConfig

    union = section_fields("loss")
    # the baselines' weights are their own keys, not Robult's
    assert {"lambda_pl", "lambda_nce", "lambda_sim", "lambda_diff"} <= set(union)
    # Robult's lambda_rec (a sum over features) and shared_private's lambda_rec_mean (a mean) are two keys
    assert [c.__name__ for c in union["lambda_rec"].owners] == ["RobultLossConfig"]
    assert [c.__name__ for c in union["lambda_rec_mean"].owners] == ["SharedPrivateLossConfig"]
    # the model section is RobultConfig's keys in its order (the late-fusion models read a part of them)
    assert list(ModelSection.model_fields) == [f.name for f in dataclasses.fields(RobultConfig)]
    owners = {k: [c.__name__ for c in f.owners] for k, f in section_fields("model").items()}
    assert owners["hidden_dim"] == owners["head_hidden"] == ["RobultConfig", "LateFusionConfig"]
    assert owners["shared_dim"] == owners["subset_weights"] == ["RobultConfig"]
    assert list(LossSection.model_fields)[:3] == ["lambda_lb", "lambda_ulb", "lambda_rec"]
    with pytest.raises(ConfigError, match=r"key 'loss\.lambda_diff': Input should be greater than or equal to 0"):
        load_config(None, ["loss.lambda_diff=-1"])


@pytest.mark.parametrize(
    ("annotation", "default", "metadata", "what"),
    [(int, 1, {"ge": 0.0}, "type"), (float, 2.0, {"ge": 0.0}, "default"), (float, 1.0, {"gt": 0.0}, "bounds")],
)
def test_a_key_shared_by_two_configs_must_match(annotation: type, default: object, metadata: dict, what: str):
    from robult.utils.options import option_fields

    first = dataclasses.make_dataclass(
        "First", [("weight", float, dataclasses.field(default=1.0, metadata={"ge": 0.0}))]
    )
    second = dataclasses.make_dataclass(
        "Second", [("weight", annotation, dataclasses.field(default=default, metadata=metadata))]
    )
    assert option_fields((first, first))["weight"].default == 1.0
    with pytest.raises(TypeError, match=rf"loss option 'weight' has {what} .* in First but .* in Second"):
        option_fields((first, second))
    with pytest.raises(TypeError, match=rf"model option 'weight' has {what} .* in First but .* in Second"):
        option_fields((first, second), "model")


def test_a_field_meaning_comes_from_its_help_or_the_nearest_docstring() -> None:
    from robult.models import LateFusionConfig, RobultConfig
    from robult.utils.options import field_meanings

    for cls in (RobultConfig, LateFusionConfig):  # the model configs say what each field means beside it
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls.__name__
    late = field_meanings(LateFusionConfig)
    assert set(late) == {f.name for f in dataclasses.fields(LateFusionConfig)}
    assert late["head_hidden"] == "hidden widths of the per-modality heads."
    assert late["dropout"] == "dropout in the built-in encoders."  # from EncoderConfig, its base
    assert "fusion" in field_meanings(RobultConfig)["dropout"]

    @dataclasses.dataclass
    class Helped(LateFusionConfig):
        """Attributes:
        extra: from the docstring.
        """

        extra: int = dataclasses.field(default=1, metadata={"help": "from the field"})

    assert field_meanings(Helped)["extra"] == "from the field"
    assert field_meanings(Helped)["head_hidden"] == late["head_hidden"]


@pytest.mark.parametrize(
    ("method", "own", "foreign"),
    [
        ("tmc", "loss.annealing_epochs", "loss.lambda_rec"),
        ("robult", "loss.lambda_rec", "loss.pseudo_view"),
        ("supervised", "model.head_hidden", "model.shared_dim"),
        ("shared_private", "loss.lambda_rec_mean", "loss.lambda_lb"),
    ],
)
def test_config_keys_of_a_method_are_only_the_keys_it_reads(method: str, own: str, foreign: str) -> None:
    from robult.config import config_keys, describe_config

    rows = {r.key: r for r in config_keys(method)}
    assert own in rows and foreign not in rows
    assert {"name", "dataset.name", "train.lr", "eval.rates"} <= set(rows)
    every = {r.key for r in config_keys()}
    assert foreign in every and own in every and set(rows) < every
    assert all(r.meaning and r.type for r in rows.values())
    assert [(r.key, r.default, r.meaning) for r in rows.values()] == describe_config(method)
    assert rows["train.method"].default == method


def test_config_keys_name_types_and_labeled_only_methods_skip_the_labeled_share() -> None:
    from robult.config import config_keys

    types = {r.key: r.type for r in config_keys()}
    assert types["model.hidden_dim"] == "int" and types["train.labeled_share"] == "float | None"
    assert types["model.sequence_encoder"] == '"gru" | "transformer" | "conv"'
    assert types["model.encoder_hidden"] == "tuple[int, ...]"
    assert "train.labeled_share" not in {r.key for r in config_keys("supervised")}
    assert "train.labeled_share" in {r.key for r in config_keys("robult")}
    fixed = {r.key: r for r in config_keys("robult_no_st")}["loss.lambda_pseudo"]
    assert fixed.default == 0.0 and "[fixed by method 'robult_no_st']" in fixed.meaning


def test_method_view_keeps_its_keys_and_names_what_it_ignores() -> None:
    from robult.config import method_config_yaml, method_view

    cfg = load_config(
        None,
        [
            "train.method=tmc",
            "loss.lambda_rec=0.5",
            "model.shared_dim=32",
            "model.dropout=0.2",
            "loss.pseudo_view=true",
            "train.labeled_share=0.5",
        ],
    )
    values, notes = method_view(cfg)
    assert values["model"] == {
        "hidden_dim": 128, "head_hidden": [], "encoder_hidden": [256], "sequence_encoder": "gru",
        "token_buckets": 32768, "dropout": 0.2,
    }  # fmt: skip
    assert values["loss"] == {"annealing_epochs": 50.0, "pseudo_view": True}
    assert "labeled_share" not in values["train"] and values["dataset"]["name"] == "synthetic"
    assert notes == [
        "model.shared_dim = 32 is ignored: method 'tmc' does not use it",
        "loss.lambda_rec = 0.5 is ignored: method 'tmc' does not use it",
        "train.labeled_share = 0.5 is ignored: method 'tmc' trains on labeled samples only",
    ]
    text = method_config_yaml(cfg)
    assert yaml.safe_load(text) == values and "# loss.lambda_rec = 0.5 is ignored" in text
    # a fixed option is shown as the method runs it, and a config value it overrides is named
    values, notes = method_view(load_config(None, ["train.method=robult_no_st", "loss.lambda_pseudo=0.5"]))
    assert values["loss"]["lambda_pseudo"] == 0.0
    assert notes == ["loss.lambda_pseudo = 0.5 is overridden: method 'robult_no_st' fixes it to 0.0"]
    values, notes = method_view(load_config(None, ["train.method=moddrop"]))
    assert values["train"]["modality_dropout"] == 0.5 and notes == [
        "train.modality_dropout is unset: method 'moddrop' uses 0.5"
    ]


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


def test_cli_config_show_method_lists_only_its_keys() -> None:
    """``robult config show --method M`` as a user runs it: M's keys with type, default and meaning, no other
    method's; with --config/--set, M's resolved values and a comment naming each key M ignores."""
    from typer.testing import CliRunner

    from robult.cli import app

    runner = CliRunner()
    keys = {}
    for method in ("tmc", "robult"):
        result = runner.invoke(app, ["config", "show", "--method", method])
        assert result.exit_code == 0, result.output
        keys[method] = {line.split()[0] for line in result.output.splitlines() if line and not line[0].isspace()}
    assert {"loss.annealing_epochs", "loss.pseudo_view", "model.head_hidden", "train.lr"} <= keys["tmc"]
    assert not {"loss.lambda_rec", "loss.lambda_lb", "model.shared_dim", "train.labeled_share"} & keys["tmc"]
    assert {"loss.lambda_rec", "loss.lambda_lb", "model.shared_dim", "train.labeled_share"} <= keys["robult"]
    assert "loss.pseudo_view" not in keys["robult"]
    line = next(x for x in runner.invoke(app, ["config", "show", "--method", "tmc"]).output.splitlines()
                if x.startswith("loss.annealing_epochs"))  # fmt: skip
    assert line.split() == ["loss.annealing_epochs", "float", "50.0"]
    config = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
    result = runner.invoke(
        app, ["config", "show", "--method", "tmc", "--config", str(config), "--set", "loss.lambda_rec=0.5"]
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["loss"] == {"annealing_epochs": 50.0, "pseudo_view": False} and shown["train"]["method"] == "tmc"
    assert "shared_dim" not in shown["model"] and shown["dataset"]["name"] == "synthetic"
    assert "# loss.lambda_rec = 0.5 is ignored: method 'tmc' does not use it" in result.stdout
