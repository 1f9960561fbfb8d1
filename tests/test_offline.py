"""Tests of the offline kit: tiny backbone, synthetic SO-100 datasets, the kit in a cache dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from zk0 import offline
from zk0.offline import (
    BACKBONE_MARKER,
    SO100_JOINTS,
    TASKS,
    OfflineKit,
    build_backbone,
    build_kit,
    make_so100_dataset,
)

os.environ["HF_HUB_OFFLINE"] = "1"


def _hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _fail(*args, **kwargs):
    raise AssertionError("must not be called")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_backbone(tmp_path_factory.mktemp("backbone") / "tiny-smolvlm")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_so100_dataset(
        tmp_path_factory.mktemp("datasets") / "so100",
        "zk0/test-so100",
        cameras=("front", "wrist"),
        episodes=3,
        frames_per_episode=8,
        image_shape=(24, 32),
        seed=7,
    )


# ---- Backbone -------------------------------------------------------------------------------


def test_backbone_builds_byte_identically(backbone: Path, tmp_path: Path) -> None:
    # Execute
    second = build_backbone(tmp_path / "again")

    # Assert
    assert _hashes(second) == _hashes(backbone)
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", BACKBONE_MARKER} <= set(_hashes(backbone))
    assert not [p for p in tmp_path.iterdir() if p.name != "again"], "no scratch directory left"


def test_backbone_marker_makes_second_call_a_no_op(backbone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setattr(offline, "_write_backbone", _fail)
    mtime = (backbone / BACKBONE_MARKER).stat().st_mtime_ns

    # Execute
    again = build_backbone(backbone)

    # Assert
    assert again == backbone
    assert (backbone / BACKBONE_MARKER).stat().st_mtime_ns == mtime


def test_backbone_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(ValueError, match="not a zk0 backbone"):
        build_backbone(tmp_path)


def test_backbone_tokenizer_and_processor_load_offline(backbone: Path) -> None:
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    # Execute
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    processor = AutoProcessor.from_pretrained(backbone)
    config = AutoConfig.from_pretrained(backbone)

    # Assert: the attributes SmolVLA and SmolVLMProcessor read
    assert tokenizer.convert_ids_to_tokens(tokenizer.fake_image_token_id) == "<fake_token_around_image>"
    assert tokenizer.convert_ids_to_tokens(tokenizer.global_image_token_id) == "<global-img>"
    assert tokenizer.pad_token == "<|im_end|>"
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert config.text_config.vocab_size == len(tokenizer)
    assert processor.image_seq_len == (64 // 8) ** 2 // 2**2
    ids = tokenizer(TASKS[0] + "\n")["input_ids"]
    assert tokenizer.decode(ids) == TASKS[0] + "\n"
    assert len(ids) < len(TASKS[0]) // 2, "BPE merges the training sentences"


def test_tiny_smolvla_builds_and_trains_offline(backbone: Path, record_property) -> None:
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    # Prepare
    image = PolicyFeature(type=FeatureType.VISUAL, shape=(3, 64, 64))
    config = SmolVLAConfig(
        vlm_model_name=str(backbone),
        load_vlm_weights=False,
        num_vlm_layers=2,
        resize_imgs_with_padding=(64, 64),
        chunk_size=10,
        n_action_steps=10,
        device="cpu",
        input_features={
            "observation.images.camera1": image,
            "observation.images.camera2": image,
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))},
    )
    stats = {
        key: {"mean": torch.zeros(6), "std": torch.ones(6), "min": -torch.ones(6), "max": torch.ones(6)}
        for key in ("observation.state", "action")
    }
    batch_size = 2
    batch = {
        "observation.images.camera1": torch.rand(batch_size, 3, 64, 64),
        "observation.images.camera2": torch.rand(batch_size, 3, 64, 64),
        "observation.state": torch.randn(batch_size, 6),
        "action": torch.randn(batch_size, 10, 6),
        "action_is_pad": torch.zeros(batch_size, 10, dtype=torch.bool),
        "task": [TASKS[0], TASKS[1]],
    }

    # Execute
    torch.manual_seed(0)
    policy = SmolVLAPolicy(config)
    preprocessor, _ = make_pre_post_processors(config, dataset_stats=stats)
    processed = preprocessor(batch)
    loss, _ = policy.forward(processed)
    loss.backward()

    # Assert
    total = sum(p.numel() for p in policy.parameters())
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    record_property("parameters", total)
    record_property("trainable_parameters", trainable)
    assert 0 < trainable < total <= 1_000_000
    tokens = processed["observation.language.tokens"]
    mask = processed["observation.language.attention_mask"]
    assert tokens.shape[0] == batch_size and tokens.shape == mask.shape
    assert mask[0].all() and not mask[1].all(), "the shorter task is right-padded"
    assert torch.isfinite(loss)


# ---- Datasets -------------------------------------------------------------------------------


def test_dataset_loads_with_expected_contents(dataset: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    # Execute
    loaded = LeRobotDataset("zk0/test-so100", root=dataset)

    # Assert
    assert (loaded.num_episodes, loaded.num_frames) == (3, 24)
    assert loaded.meta.robot_type == "so100_follower"
    assert loaded.meta.camera_keys == ["observation.images.front", "observation.images.wrist"]
    assert loaded.meta.features["observation.state"]["names"] == list(SO100_JOINTS)
    assert set(loaded.meta.tasks.index) <= set(TASKS)
    frame = loaded[5]
    assert frame["observation.state"].shape == frame["action"].shape == (6,)
    assert frame["observation.images.front"].shape == (3, 24, 32)
    assert frame["task"] in TASKS


def test_dataset_action_is_next_state_and_images_are_smooth(dataset: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    loaded = LeRobotDataset("zk0/test-so100", root=dataset)
    first, second = loaded[0], loaded[1]

    assert np.allclose(first["action"].numpy(), second["observation.state"].numpy())
    image = first["observation.images.wrist"].numpy()
    # Uniform noise would give a mean neighbour difference of 1/3.
    for axis in (1, 2):
        steps = np.abs(np.diff(image, axis=axis))
        assert steps.mean() < 0.05 and steps.max() < 0.3, f"smooth along axis {axis}"
    assert image.std() > 0.02, "the image is not constant"
    assert not np.array_equal(image, loaded[4]["observation.images.wrist"].numpy()), "the scene moves"


def test_dataset_is_deterministic_from_seed(dataset: Path, tmp_path: Path) -> None:
    import pandas as pd

    # Execute
    again = make_so100_dataset(
        tmp_path / "again",
        "zk0/test-so100",
        episodes=3,
        frames_per_episode=8,
        image_shape=(24, 32),
        seed=7,
    )

    # Assert
    files = sorted(p.relative_to(dataset) for p in (dataset / "data").rglob("*.parquet"))
    for name in files:
        pd.testing.assert_frame_equal(pd.read_parquet(dataset / name), pd.read_parquet(again / name))


def test_dataset_refuses_a_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")

    with pytest.raises(ValueError, match="not empty"):
        make_so100_dataset(tmp_path, "zk0/x")

    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_dataset_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(directory: Path, *args, **kwargs) -> None:
        directory.mkdir()
        (directory / "half.txt").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(offline, "_record_so100", crash)

    with pytest.raises(KeyboardInterrupt):
        make_so100_dataset(tmp_path / "ds", "zk0/x")

    assert list(tmp_path.iterdir()) == []


# ---- Kit ------------------------------------------------------------------------------------


def test_build_kit_reuses_and_varies_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    # Prepare
    sizes = {"clients": 2, "episodes": 1, "frames_per_episode": 4}

    # Execute
    kit = build_kit(tmp_path, **sizes)
    stamps = {p: (p / "meta" / "info.json").stat().st_mtime_ns for p in kit.datasets}
    monkeypatch.setattr(offline, "_write_backbone", _fail)
    monkeypatch.setattr(offline, "_record_so100", _fail)
    again = build_kit(tmp_path, **sizes)

    # Assert
    expected = OfflineKit(
        backbone=tmp_path / "backbone",
        datasets=(tmp_path / "datasets" / "client-0", tmp_path / "datasets" / "client-1"),
    )
    assert again == kit == expected
    assert {p: (p / "meta" / "info.json").stat().st_mtime_ns for p in kit.datasets} == stamps
    metas = [LeRobotDatasetMetadata(offline.dataset_repo_id(p), root=p) for p in kit.datasets]
    assert [m.camera_keys for m in metas] == [
        ["observation.images.front", "observation.images.wrist"],
        ["observation.images.laptop", "observation.images.phone"],
    ]
    shapes = [tuple(m.features[m.camera_keys[0]]["shape"]) for m in metas]
    assert shapes == [(48, 64, 3), (64, 48, 3)]
    assert [m.total_episodes for m in metas] == [1, 1]


def test_build_kit_refuses_a_dataset_of_another_size(tmp_path: Path) -> None:
    build_kit(tmp_path, clients=1, episodes=1, frames_per_episode=4)

    with pytest.raises(ValueError, match="Delete it to rebuild"):
        build_kit(tmp_path, clients=1, episodes=2, frames_per_episode=4)
