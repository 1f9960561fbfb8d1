"""RunConfig/NodeConfig: built from the declared defaults, bad values rejected with the key named."""

import tomllib
from pathlib import Path

import pytest

from zk0.config import ConfigError, NodeConfig, RunConfig

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def defaults() -> dict:
    return dict(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])


def test_declared_defaults_build_a_config_that_uses_every_key():
    cfg = RunConfig.from_run_config(defaults())

    assert cfg.model == "lerobot/smolvla_base"
    assert cfg.wire_dtype == "float32"
    assert cfg.camera_features == (
        "observation.images.camera1",
        "observation.images.camera2",
        "observation.images.camera3",
    )
    # Every declared key maps to a field and every field is declared.
    assert len(defaults()) == len(RunConfig.__dataclass_fields__)


def test_int_is_accepted_for_float_and_integral_float_for_int():
    cfg = RunConfig.from_run_config(defaults() | {"learning-rate": 1, "local-steps": 5.0})

    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.local_steps == 5 and isinstance(cfg.local_steps, int)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("local-steps", -1, "'local-steps' must be >= 1, got -1"),
        ("local-steps", "ten", "'local-steps' must be int, got 'ten'"),
        ("local-steps", True, "'local-steps' must be int, got True"),
        ("proximal-mu", -0.1, "'proximal-mu' must be >= 0.0"),
        ("wire-dtype", "float16", "'wire-dtype' must be one of float32, bfloat16; got 'float16'"),
        ("eval-fraction", 0.95, "'eval-fraction' must be >= 0.0 and <= 0.9"),
        ("fraction-train", 0.0, "'fraction-train' must be > 0.0"),
        ("n-action-steps", 60, "'n-action-steps' (60) must be <= 'chunk-size' (50)"),
        ("model", " ", "'model' must name a hub id or a local directory"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match="^setting " + message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.from_run_config(defaults() | {key: value})


def test_missing_and_unknown_keys_are_rejected():
    values = defaults()
    del values["seed"]
    with pytest.raises(ConfigError, match="'seed' is missing"):
        RunConfig.from_run_config(values)
    with pytest.raises(ConfigError, match="unknown setting.*local-epochs"):
        RunConfig.from_run_config(defaults() | {"local-epochs": 1})


def test_node_config_keeps_its_keys_and_ignores_flowers():
    node = NodeConfig.from_node_config(
        {"dataset-uri": "local:/data/x", "partition-id": 0, "num-workers": 0, "threads": 3}
    )

    assert node == NodeConfig(dataset_uri="local:/data/x", camera_map="", device="auto", num_workers=0, threads=3)
    assert NodeConfig.from_node_config({"dataset-uri": "local:/x"}).threads == 0  # torch's default


def test_node_config_errors():
    with pytest.raises(ConfigError, match="'dataset-uri' is missing"):
        NodeConfig.from_node_config({})
    with pytest.raises(ConfigError, match="'device' must be one of auto, cpu, cuda; got 'tpu'"):
        NodeConfig.from_node_config({"dataset-uri": "local:/x", "device": "tpu"})
    with pytest.raises(ConfigError, match="'threads'"):
        NodeConfig.from_node_config({"dataset-uri": "local:/x", "threads": -1})
