"""Dataset URIs, SO-100 checks on real LeRobot files, episode split, camera mapping."""

from pathlib import Path

import pytest
import torch

from odd_datasets import IMAGE, vector, write_dataset
from zk0.datasets import DatasetError, DatasetSource, camera_map, check_so100, rename_cameras, split_episodes
from zk0.offline import make_so100_dataset

CAM = "observation.images."


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf:lerobot/svla_so100_pickplace", DatasetSource("hf", "lerobot/svla_so100_pickplace")),
        ("hf:me/ds@v2.1", DatasetSource("hf", "me/ds", "v2.1")),
        ("local:/data/so100", DatasetSource("local", "local/so100", None, Path("/data/so100"))),
    ],
)
def test_uris_parse(uri, expected):
    assert DatasetSource.parse(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "must be 'hf:owner/name"),
        ("s3://bucket/ds", "unknown scheme 's3'"),
        ("hf:nameonly", "expected 'hf:owner/name'"),
        ("hf:a/b/c", "expected 'hf:owner/name'"),
        ("hf:me/ds@", "empty revision"),
        ("local:relative/path", "must be absolute"),
    ],
)
def test_bad_uris_are_rejected(uri, message):
    with pytest.raises(DatasetError, match=message):
        DatasetSource.parse(uri)


def test_local_paths_that_are_not_datasets_fail_before_lerobot_tries_the_hub(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        DatasetSource.parse(f"local:{tmp_path / 'missing'}").metadata()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="is not a LeRobot dataset"):
        DatasetSource.parse(f"local:{tmp_path}").metadata()


def test_so100_dataset_passes_the_check_and_reports_sorted_cameras(tmp_path):
    root = make_so100_dataset(tmp_path / "ds", "zk0/ds", cameras=("wrist", "front"), episodes=2, frames_per_episode=4)

    meta = DatasetSource.parse(f"local:{root}").metadata()

    assert check_so100(meta, state_dim=6, action_dim=6) == [f"{CAM}front", f"{CAM}wrist"]


def test_wrong_dimension_missing_action_and_no_camera_are_named(tmp_path):
    cases = {
        "seven": (
            {"observation.state": vector(7), "action": vector(6), f"{CAM}front": IMAGE},
            r"'observation.state' has shape \(7,\), expected \(6,\)",
        ),
        "noaction": ({"observation.state": vector(6), f"{CAM}front": IMAGE}, "has no 'action' feature"),
        "nocam": ({"observation.state": vector(6), "action": vector(6)}, "has no camera"),
    }
    for name, (features, message) in cases.items():
        write_dataset(tmp_path / name, features)
        meta = DatasetSource.parse(f"local:{tmp_path / name}").metadata()
        with pytest.raises(DatasetError, match=message):
            check_so100(meta, state_dim=6, action_dim=6)


def test_split_is_deterministic_disjoint_and_complete():
    train, held = split_episodes(20, 0.25, seed=3)

    assert (train, held) == split_episodes(20, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert sorted(train + held) == list(range(20))
    assert split_episodes(20, 0.25, seed=4) != (train, held)


@pytest.mark.parametrize(
    ("n", "fraction", "sizes"),
    [(1, 0.5, (1, 0)), (2, 0.1, (1, 1)), (10, 0.0, (10, 0)), (3, 0.9, (1, 2))],
)
def test_split_edge_cases_keep_a_training_episode(n, fraction, sizes):
    train, held = split_episodes(n, fraction, seed=0)

    assert (len(train), len(held)) == sizes


MODEL = (f"{CAM}camera1", f"{CAM}camera2", f"{CAM}camera3")


def test_cameras_map_in_sorted_order_by_default():
    assert camera_map([f"{CAM}wrist", f"{CAM}front"], MODEL) == {
        f"{CAM}front": f"{CAM}camera1",
        f"{CAM}wrist": f"{CAM}camera2",
    }


def test_explicit_camera_map_accepts_short_names():
    mapping = camera_map([f"{CAM}laptop", f"{CAM}phone"], MODEL, "phone=camera1, laptop=camera3")

    assert mapping == {f"{CAM}phone": f"{CAM}camera1", f"{CAM}laptop": f"{CAM}camera3"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("top=camera1", "'top=camera1' must be"),
        ("front=camera9", "must be"),
        ("front", "must be"),
        ("front=camera1,wrist=camera1", "two cameras onto 'camera1'"),
    ],
)
def test_bad_camera_maps_are_rejected(spec, message):
    with pytest.raises(DatasetError, match=message):
        camera_map([f"{CAM}front", f"{CAM}wrist"], MODEL, spec)


def test_more_cameras_than_the_model_takes_needs_a_map():
    cams = [f"{CAM}{n}" for n in ("a", "b", "c", "d")]
    with pytest.raises(DatasetError, match="4 cameras .* model takes 3; choose some with camera-map"):
        camera_map(cams, MODEL)


def test_rename_moves_mapped_cameras_and_drops_the_rest():
    batch = {
        f"{CAM}front": torch.zeros(1),
        f"{CAM}front_is_pad": torch.ones(1),
        f"{CAM}top": torch.zeros(1),
        "action": torch.ones(1),
        "task": ["wave"],
    }

    out = rename_cameras(batch, {f"{CAM}front": f"{CAM}camera1"})

    assert sorted(out) == ["action", f"{CAM}camera1", f"{CAM}camera1_is_pad", "task"]
