"""Atomic global checkpoints, history lines, and where a new session starts."""

import pytest
import torch

from zk0 import checkpoints
from zk0.errors import PolicyError

FRESH = {"a": torch.zeros(2, 3), "b": torch.ones(4)}


def test_save_and_load_round_trip_with_metadata(tmp_path):
    checkpoints.save_global(tmp_path, {"a": torch.arange(6.0).reshape(2, 3)}, {"round": 3, "target": 5})

    tensors, meta = checkpoints.load_global(tmp_path)

    assert torch.equal(tensors["a"], torch.arange(6.0).reshape(2, 3))
    assert meta == {"round": "3", "target": "5"}


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path):
    checkpoints.save_global(tmp_path, FRESH, {"round": 1})

    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises for a non-tensor
        checkpoints.save_global(tmp_path, {"a": "not a tensor"}, {"round": 2})

    tensors, meta = checkpoints.load_global(tmp_path)
    assert meta["round"] == "1" and torch.equal(tensors["b"], FRESH["b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoints.GLOBAL_FILE]


def test_history_appends_one_line_per_record(tmp_path):
    checkpoints.append_history(tmp_path, {"round": 1})
    checkpoints.append_history(tmp_path, {"round": 2, "train": {"train-loss": 0.5}})

    assert checkpoints.read_history(tmp_path) == [{"round": 1}, {"round": 2, "train": {"train-loss": 0.5}}]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, (0, 3)),
        ({"round": "2", "target": "5"}, (2, 5)),  # cut short at round 2 of 5: finish it
        ({"round": "5", "target": "5"}, (5, 8)),  # finished: the next session adds 3 rounds
        ({"round": "4"}, (4, 7)),
    ],
)
def test_plan_session(metadata, expected):
    assert checkpoints.plan_session(metadata, 3) == expected


def test_resume_starts_fresh_then_from_the_checkpoint(tmp_path):
    state, done, target = checkpoints.resume(tmp_path, FRESH, 3)
    assert state is FRESH and (done, target) == (0, 3)

    saved = {"a": torch.full((2, 3), 7.0), "b": torch.full((4,), 7.0)}
    checkpoints.save_global(tmp_path, saved, {"round": 1, "target": 3})
    state, done, target = checkpoints.resume(tmp_path, FRESH, 3)

    assert all(torch.equal(state[k], saved[k]) for k in saved) and (done, target) == (1, 3)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    checkpoints.save_global(tmp_path, {"a": torch.zeros(5)}, {"round": 1})

    with pytest.raises(PolicyError, match="does not fit this model"):
        checkpoints.resume(tmp_path, FRESH, 3)


def test_resume_refuses_a_checkpoint_that_does_not_match_its_digest(tmp_path):
    from zk0.integrity import digest
    from zk0.policy import to_arrays

    saved = {"a": torch.full((2, 3), 7.0), "b": torch.full((4,), 7.0)}
    checkpoints.save_global(tmp_path, saved, {"round": 1, "digest": digest(to_arrays(saved, "float32"))})
    assert checkpoints.resume(tmp_path, FRESH, 3)[1] == 1  # intact: accepted

    altered = {**saved, "b": torch.full((4,), 8.0)}
    checkpoints.save_global(tmp_path, altered, {"round": 1, "digest": digest(to_arrays(saved, "float32"))})
    with pytest.raises(PolicyError, match="does not match its recorded digest"):
        checkpoints.resume(tmp_path, FRESH, 3)
