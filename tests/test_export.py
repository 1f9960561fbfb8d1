"""zk0bot export: a policy dir that LeRobot loads and runs with no zk0 code; bad inputs leave nothing."""

import contextlib
import io
import json

import pytest
import torch

from zk0 import checkpoints
from zk0.cli import main
from zk0.config import RunConfig
from zk0.export import try_policy
from zk0.integrity import digest
from zk0.paths import server_dir
from zk0.policy import build_policy, to_arrays, trainable_state

CAMERA_MAP = "wrist=camera1,front=camera2"  # the kit's first dataset has cameras front and wrist


@pytest.fixture(scope="module")
def cfg(tiny_run_config):
    return RunConfig.from_run_config(tiny_run_config)


@pytest.fixture(scope="module")
def state(cfg, tmp_path_factory):
    """A state dir whose server holds a round-2 checkpoint with weights unlike a fresh policy's."""
    root = tmp_path_factory.mktemp("state")
    generator = torch.Generator().manual_seed(1)
    tensors = {
        k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in trainable_state(build_policy(cfg)).items()
    }
    meta = {
        "round": 2,
        "target": 2,
        "run-id": 9,
        "run-config": json.dumps(cfg.to_run_config()),
        "digest": digest(to_arrays(tensors, "float32")),
    }
    checkpoints.save_global(server_dir(root), tensors, meta)
    return root


@pytest.fixture(scope="module")
def exported(state, kit, tmp_path_factory):
    """Run the export once: (policy dir, what it printed)."""
    out = tmp_path_factory.mktemp("robot") / "policy"
    stdout = io.StringIO()
    args = ["export", "latest", str(out), "--stats-from", f"local:{kit.datasets[0]}", "--state-dir", str(state)]
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exit_info:
        main([*args, "--camera-map", CAMERA_MAP])
    assert exit_info.value.code in (0, None)
    return out, stdout.getvalue()


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_export_says_what_it_wrote(exported):
    out, printed = exported

    assert printed.strip() == f"exported round 2 to {out} (cameras wrist=camera1, front=camera2)"
    assert not [p for p in out.parent.iterdir() if p.name != "policy"], "no temp dir left beside it"


def test_lerobot_alone_loads_the_checkpoint_weights_and_the_dataset_stats(exported, state, kit):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.processor import NormalizerProcessorStep, RenameObservationsProcessorStep

    out, _ = exported
    saved, _ = checkpoints.load_global(server_dir(state))

    policy = SmolVLAPolicy.from_pretrained(out)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(out))

    params = dict(policy.named_parameters())
    assert all(torch.equal(params[name], value) for name, value in saved.items())
    meta = LeRobotDatasetMetadata("zk0/client-0", root=kit.datasets[0])
    normaliser = next(s for s in pre.steps if isinstance(s, NormalizerProcessorStep))
    for key in ("observation.state", "action"):
        for stat in ("mean", "std"):
            expected = torch.as_tensor(meta.stats[key][stat], dtype=torch.float32)
            assert torch.allclose(torch.as_tensor(normaliser.stats[key][stat], dtype=torch.float32), expected)
    rename = next(s for s in pre.steps if isinstance(s, RenameObservationsProcessorStep))
    assert rename.rename_map == {
        "observation.images.wrist": "observation.images.camera1",
        "observation.images.front": "observation.images.camera2",
    }


def test_the_loaded_policy_acts_on_a_raw_dataset_frame(exported, kit):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    out, _ = exported
    policy = SmolVLAPolicy.from_pretrained(out)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(out))
    frame = LeRobotDataset("zk0/client-0", root=kit.datasets[0])[0]
    # What a robot gives: its own camera names (the preprocessor maps them), the state and the task.
    observation = {k: v for k, v in frame.items() if k.startswith("observation.")} | {"task": frame["task"]}

    with torch.no_grad():
        batch = pre(observation)
        chunk = policy.predict_action_chunk(batch)
        action = post(policy.select_action(batch))

    assert tuple(chunk.shape) == (1, policy.config.chunk_size, 6)
    assert tuple(action.shape) == (1, 6) and torch.isfinite(action).all()
    assert try_policy(out, f"local:{kit.datasets[0]}") == (1, policy.config.chunk_size, 6)  # what the demo runs


def _assert_failed_cleanly(code, stdout, err, message, out):
    assert code == 2, err
    assert err.startswith("Error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists(), "no output dir after a failed export"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temp dir left behind"


def test_bad_inputs_are_one_line_and_leave_nothing_behind(state, kit, tmp_path, capsys):
    dataset = f"local:{kit.datasets[0]}"
    out = tmp_path / "out"
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    damaged = tmp_path / "damaged"
    checkpoints.save_global(server_dir(damaged), {"a": torch.zeros(3)}, {"round": 1, "run-config": "{}", "digest": "0"})
    cases = [
        (["latest", out, "--stats-from", dataset, "--state-dir", tmp_path / "empty"], "no global checkpoint in"),
        (["latest", out, "--stats-from", dataset, "--state-dir", damaged], "does not match its recorded digest"),
        (
            ["5", out, "--stats-from", dataset],
            f"round 5 has no checkpoint in {server_dir(state)}; saved rounds: none; 'latest' is round 2",
        ),
        (["five", out, "--stats-from", dataset], "ROUND must be a round number or 'latest', got 'five'"),
        (["2", taken, "--stats-from", dataset], f"{taken} already exists and is not empty"),
        (["latest", out, "--stats-from", "s3://bucket/ds"], "unknown scheme 's3'"),
        (["latest", out, "--stats-from", f"local:{tmp_path / 'missing'}"], "does not exist"),
        (["latest", out, "--stats-from", dataset, "--camera-map", "top=camera1"], "camera-map entry 'top=camera1'"),
    ]
    for args, message in cases:
        if "--state-dir" not in args:
            args += ["--state-dir", state]

        code, stdout, err = run_cli(["export", *map(str, args)], capsys)

        _assert_failed_cleanly(code, stdout, err, message, out)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


def test_a_checkpoint_that_does_not_fit_its_model_fails_after_building_and_leaves_nothing(cfg, kit, tmp_path, capsys):
    state, out = tmp_path / "misfit", tmp_path / "out"
    meta = {"round": 1, "run-config": json.dumps(cfg.to_run_config())}
    checkpoints.save_global(server_dir(state), {"a": torch.zeros(3)}, meta)

    code, stdout, err = run_cli(
        ["export", "latest", str(out), "--stats-from", f"local:{kit.datasets[0]}", "--state-dir", str(state)], capsys
    )

    # LeRobot announces the model it builds on stderr before the error.
    _assert_failed_cleanly(code, stdout, err.splitlines()[-1] + "\n", "does not fit the model", out)
