"""TrainConfig: defaults, validation messages and the JSON round trip."""

import json
import math

import pytest

from gan.config import GROUPS, ConfigError, TrainConfig, field_group, field_help


def test_defaults_are_valid():
    config = TrainConfig().validate(num_images=10_000)
    assert config.model == "dcgan"
    assert config.beta_1 == 0.5
    assert config.generator_lr == 2e-4


def test_json_round_trip_keeps_every_field():
    config = TrainConfig(data="fashion_mnist", epochs=3, model="conditional", max_images=500, beta_2=0.99)
    restored = TrainConfig.from_json(config.to_json())
    assert restored == config


def test_json_ignores_version_key():
    text = json.dumps({"version": "0.1.0", **TrainConfig(epochs=7).to_dict()})
    assert TrainConfig.from_json(text).epochs == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, r"epochs must be an integer from 1 to 100000, got 0; the default is 20"),
        ({"batch_size": -4}, r"batch_size must be an integer from 1 to 65536, got -4"),
        ({"latent_dim": 0}, r"latent_dim must be an integer from 1 to 4096"),
        ({"width": 2.5}, r"width must be an integer from 1 to 1024, got 2.5"),
        ({"epochs": True}, r"epochs must be an integer from 1 to 100000, got True"),
        ({"sample_count": 0}, r"sample_count must be an integer from 1 to 1024"),
        ({"checkpoints_kept": 0}, r"checkpoints_kept must be an integer from 1 to 10000"),
        ({"max_images": 0}, r"max_images must be an integer from 1 to \d+.*unset \(empty\)"),
        ({"seed": -1}, r"seed must be an integer from 0 to 4294967295, got -1"),
        ({"generator_lr": math.nan}, r"generator_lr must be a number greater than 0 and at most 1, got nan"),
        ({"discriminator_lr": math.inf}, r"discriminator_lr must be a number greater than 0.*, got inf"),
        ({"generator_lr": 0.0}, r"generator_lr must be a number greater than 0"),
        ({"beta_1": 1.0}, r"beta_1 must be in \[0, 1\), got 1.0"),
        ({"checkpoint_every_minutes": 0}, r"checkpoint_every_minutes must be a number greater than 0"),
        ({"model": "wgan"}, r"model must be one of dcgan, conditional, got 'wgan'"),
        ({"strategy": "tpu"}, r"strategy must be one of auto, default, mirrored, multi_worker"),
        ({"precision": "float16"}, r"precision must be one of auto, float32, mixed_float16, mixed_bfloat16"),
        ({"data": "cifar10"}, r"data 'cifar10' is neither a known dataset \(mnist, fashion_mnist\)"),
        ({"data": ""}, r"data must be one of mnist, fashion_mnist or a path"),
    ],
)
def test_validate_rejects_bad_value(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()


def test_batch_larger_than_dataset_rejected():
    with pytest.raises(ConfigError, match=r"batch_size 128 is larger than the 100 training images"):
        TrainConfig(batch_size=128).validate(num_images=100)
    with pytest.raises(ConfigError, match=r"batch_size 64 is larger than the 50 training images"):
        TrainConfig(batch_size=64, max_images=50).validate(num_images=10_000)


def test_existing_path_is_valid_data(tmp_path):
    path = tmp_path / "digits.npz"
    path.write_bytes(b"")
    assert TrainConfig(data=str(path)).validate().data == str(path)


def test_unknown_json_key_rejected():
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_invalid_json_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json: config is not valid JSON"):
        TrainConfig.load(path)
    with pytest.raises(ConfigError, match=r"not found"):
        TrainConfig.load(tmp_path / "missing.json")


def test_every_field_has_group_and_help():
    for name in TrainConfig.__dataclass_fields__:
        assert field_group(name) in GROUPS, name
        assert field_help(name).endswith("."), name


def test_jit_compile_default_off():
    assert TrainConfig().jit_compile is False
    assert TrainConfig.from_json(TrainConfig(jit_compile=True).to_json()).jit_compile is True


def test_missing_jit_compile_loads_off(tmp_path):
    values = TrainConfig().to_dict()
    del values["jit_compile"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"version": "0.1.0", **values}))
    assert TrainConfig.load(path).jit_compile is False


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_jit_compile_rejects_non_bool(value):
    with pytest.raises(ConfigError, match=r"jit_compile must be true or false"):
        TrainConfig(jit_compile=value).validate()
    with pytest.raises(ConfigError, match=r"jit_compile must be true or false, got"):
        TrainConfig.from_dict({"jit_compile": value})


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], None), (["--jit-compile"], True), (["--no-jit-compile"], False)],
)
def test_jit_compile_cli_flag(flags, expected):
    from gan import cli

    args = cli.build_parser().parse_args(["train", "--run-dir", "runs/x", *flags])
    assert args.jit_compile is expected
