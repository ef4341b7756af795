"""The one typed parameter set, `make run` argument parsing, and agreement with the pipeline."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest

from pipelines.config import Augmentation, ConfigError, PipelineConfig, build_config
from pipelines.local import absolute_local_paths, check_local_inputs
from pipelines.words import parse_arguments


def test_defaults_are_valid():
    config = build_config()
    assert config == PipelineConfig()
    assert (config.train_split, config.val_split, config.test_split) == (0.7, 0.2, 0.1)
    assert config.pipeline_arguments()["image_size"] == PipelineConfig.model_fields["image_size"].default


def test_unknown_key_named():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['epochs'\]"):
        build_config({"epochs": "3"})


@pytest.mark.parametrize("key", ["frozen_epochs", "finetune_epochs"])
def test_negative_epochs_named(key):
    with pytest.raises(ConfigError, match=rf"{key}: .*greater than or equal to 0"):
        build_config({key: "-1"})


def test_split_ratios_must_sum_to_one():
    with pytest.raises(ConfigError) as info:
        build_config({"train_split": "0.5"})
    message = str(info.value)
    assert "train_split + val_split + test_split must sum to 1" in message
    assert "0.8" in message


def test_split_ratios_that_sum_to_one_accepted():
    config = build_config({"train_split": "0.6", "val_split": "0.3"})
    assert (config.train_split, config.val_split, config.test_split) == (0.6, 0.3, 0.1)


def test_unknown_augmentation_named():
    with pytest.raises(ConfigError, match=r"augmentations: .*unknown augmentation\(s\) \['blur'\]"):
        build_config({"augmentations": "flip,blur"})


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("image_size", "abc", "image_size: Input should be a valid integer"),
        ("batch_size", "0", "batch_size: Input should be greater than or equal to 1"),
        ("image_size", "16", "image_size: Input should be greater than or equal to 32"),
        ("backbone_alpha", "0.3", "backbone_alpha: Value error, MobileNetV2 alpha must be one of"),
        ("champion_metric", "loss", "champion_metric: Input should be 'accuracy'"),
        ("learning_rate", "0", "learning_rate: Input should be greater than 0"),
        ("deploy_target", "mars", "deploy_target"),
        ("finetune_ema_momentum", "1", "finetune_ema_momentum: Input should be less than 1"),
        ("finetune_ema_momentum", "-0.1", "finetune_ema_momentum: Input should be greater than or equal to 0"),
        ("finetune_image_scale", "0", "finetune_image_scale: Input should be greater than 0"),
        ("finetune_image_scale", "1.5", "finetune_image_scale: Input should be less than or equal to 1"),
    ],
)
def test_invalid_values_named(key, value, expected):
    with pytest.raises(ConfigError) as info:
        build_config({key: value})
    assert expected in str(info.value)


def test_fine_tuning_resolution_below_32_px_named():
    with pytest.raises(ConfigError, match=r"finetune_image_scale: 0.5 x image_size 48 is below 32 px"):
        build_config({"image_size": "48", "finetune_image_scale": "0.5"})
    assert build_config({"image_size": "64", "finetune_image_scale": "0.5"}).finetune_image_scale == 0.5


def test_overrides_parse_types():
    config = build_config(
        {"frozen_epochs": "3", "learning_rate": "0.01", "backbone_alpha": "0.5", "image_size": "96",
         "augmentations": " flip , zoom ", "data_uri": "gs://b/p"}
    )
    assert config.frozen_epochs == 3 and type(config.frozen_epochs) is int
    assert config.learning_rate == 0.01 and type(config.learning_rate) is float
    assert config.backbone_alpha == 0.5
    assert config.image_size == 96
    assert config.augmentations == "flip,zoom"  # normalised
    assert config.data_uri == "gs://b/p"


def test_overrides_apply_on_a_base():
    base = build_config({"seed": "7"})
    assert build_config({"batch_size": "8"}, base=base).seed == 7


def test_config_is_frozen_and_strict():
    config = PipelineConfig()
    with pytest.raises(Exception):
        config.seed = 1  # type: ignore[misc]
    with pytest.raises(Exception):
        PipelineConfig(nonsense=1)  # type: ignore[call-arg]


def test_empty_augmentations_allowed():
    assert build_config({"augmentations": ""}).augmentations == ""


# --- make run arguments ----------------------------------------------------------------------

def test_parse_arguments_aliases_and_settings():
    overrides, settings = parse_arguments(["DATA=/tmp/pets", "TARGET=local", "image_size=96", "REGISTRY=reg"])
    assert overrides == {"data_uri": "/tmp/pets", "image_size": "96", "registry_uri": "reg"}
    assert settings["TARGET"] == "local"
    assert "OUTPUT_ROOT" in settings  # defaults kept


def test_parse_arguments_keeps_equals_in_values():
    overrides, _ = parse_arguments(["data_uri=https://h/x.zip?a=b"])
    assert overrides == {"data_uri": "https://h/x.zip?a=b"}


def test_parse_arguments_rejects_unknown_setting():
    with pytest.raises(ConfigError, match="unknown setting FOO"):
        parse_arguments(["FOO=1"])


@pytest.mark.parametrize("word", ["image_size", "=3"])
def test_parse_arguments_rejects_words_without_key_value(word):
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_arguments([word])


def test_run_main_rejects_bad_arguments_before_running(capsys):
    from pipelines.run import main

    assert main(["epochs=3"]) == 2
    assert "unknown parameter(s) ['epochs']" in capsys.readouterr().err
    assert main(["frozen_epochs=-2"]) == 2
    assert "frozen_epochs" in capsys.readouterr().err


def test_absolute_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = absolute_local_paths(build_config({"data_uri": "data", "registry_uri": "gs://b/reg"}))
    assert config.data_uri == str(tmp_path / "data")
    assert config.registry_uri == "gs://b/reg"
    assert config.weights == "imagenet"
    assert Path(absolute_local_paths(build_config({"weights": "w.h5"})).weights).is_absolute()


def test_feedback_uri_made_absolute_unless_unset_or_remote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_local_paths(build_config()).feedback_uri == ""
    assert absolute_local_paths(build_config({"feedback_uri": "feedback_data"})).feedback_uri == str(
        tmp_path / "feedback_data")
    assert absolute_local_paths(build_config({"feedback_uri": "gs://b/fb"})).feedback_uri == "gs://b/fb"


def test_feedback_uri_that_does_not_exist_yet_is_not_an_error(image_folder, tmp_path):
    check_local_inputs(build_config({"data_uri": str(image_folder), "feedback_uri": str(tmp_path / "nobody-yet"),
                                     "weights": "none"}))


@pytest.mark.parametrize("uri", ["https://h/feedback", "s3://b/feedback"])
def test_feedback_uri_must_be_a_folder_or_gcs(uri):
    with pytest.raises(ConfigError, match=r"feedback_uri: .*give a local folder or a gs:// prefix"):
        build_config({"feedback_uri": uri})


# --- one parameter set everywhere ------------------------------------------------------------

def test_pipeline_parameters_equal_config_fields():
    from pipelines.training_pipeline import training_pipeline

    signature = inspect.signature(training_pipeline.pipeline_func)
    defaults = PipelineConfig()
    assert list(signature.parameters) == list(PipelineConfig.model_fields)
    for name, parameter in signature.parameters.items():
        assert parameter.default == getattr(defaults, name), name
    # and in the compiled spec the inputs carry the same defaults
    inputs = training_pipeline.component_spec.inputs
    assert set(inputs) == set(PipelineConfig.model_fields)
    assert {k: v.default for k, v in inputs.items()} == defaults.model_dump()


def test_augmentation_layers_match_config_literal():
    from catdog.augment import AUGMENTATION_LAYERS

    assert set(AUGMENTATION_LAYERS) == set(typing.get_args(Augmentation))
