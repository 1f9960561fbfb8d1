"""Server-side wandb tracking: readiness checks, flattening, and a real offline run on disk."""

import json
import subprocess
import sys

import pytest

from zk0 import tracking
from zk0.errors import ConfigError

PLANTED_KEY = "zk0planted" + "0123456789abcdef" * 2

ROUND_1 = {
    "round": 1,
    "accepted": 2,
    "rejected": 0,
    "seconds": 12.5,
    "run-id": 7,
    "digest": "ab" * 32,
    "train": {"train-loss": 2.0, "train-steps": 3.0},
    "evaluate": {"eval-loss": 1.75, "action-mse": 0.5},
    "clients": [
        {"node-id": 11, "train-loss": 2.25, "num-examples": 8, "param-names-sha256": "cd" * 32},
        {"node-id": 22, "train-loss": 1.75, "num-examples": 8, "train-episodes": None},
    ],
    "eval-clients": [{"node-id": 11, "eval-loss": 1.5, "action-mse": 0.25, "num-examples": 4}],
    "shared-episodes": [],
}
ROUND_2 = {
    "round": 2,
    "accepted": 1,
    "rejected": 1,
    "seconds": 10.0,
    "train": {"train-loss": 1.25, "train-steps": 3.0},
    "evaluate": None,
    "clients": [{"node-id": 11, "train-loss": 1.25, "num-examples": 8}],
    "eval-clients": [],
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """wandb offline with its home, cache and config dirs in tmp_path; a fresh wandb setup before and after.

    wandb reads its environment once per process (``wandb.setup``); ``wandb.teardown`` forgets it.
    """
    import wandb

    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": tmp_path / "wandb-dir",
        "HOME": tmp_path / "home",
        "XDG_CACHE_HOME": tmp_path / "home" / ".cache",
        "XDG_CONFIG_HOME": tmp_path / "home" / ".config",
        "WANDB_CONFIG_DIR": tmp_path / "home" / ".config" / "wandb",
    }.items():
        monkeypatch.setenv(name, str(value))
    wandb.teardown()
    yield monkeypatch
    wandb.teardown()


def _history(run_file):
    """The history rows in a .wandb file: a LevelDB-style log of wandb Record protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, rows, pos, chunk = run_file.read_bytes(), [], 7, b""  # 7-byte header ":W&B", magic, version
    assert data.startswith(b":W&B")
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        size, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = chunk + data[pos + 7 : pos + 7 + size], pos + 7 + size
        if kind in (1, 4):  # a full record, or the last piece of one
            record, chunk = pb.Record.FromString(chunk), b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows


def test_check_ready_passes_when_off_whatever_the_environment():
    tracking.check_ready(False, env={})


def test_check_ready_without_a_key_names_the_variable():
    with pytest.raises(ConfigError, match="WANDB_API_KEY") as err:
        tracking.check_ready(True, env={})

    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "env",
    [{"WANDB_API_KEY": PLANTED_KEY}, {"WANDB_MODE": "offline"}, {"WANDB_MODE": "disabled"}],
)
def test_check_ready_passes_with_a_key_or_a_keyless_mode(env):
    tracking.check_ready(True, env=env)


def test_check_ready_with_online_mode_and_no_key_fails():
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        tracking.check_ready(True, env={"WANDB_MODE": "online", "WANDB_API_KEY": ""})


def test_check_ready_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes 'import wandb' raise ImportError

    with pytest.raises(ConfigError, match="pip install wandb"):
        tracking.check_ready(True, env={"WANDB_API_KEY": PLANTED_KEY})


def test_flatten_a_history_record():
    assert tracking.flatten(ROUND_1) == {
        "updates/accepted": 2,
        "updates/rejected": 0,
        "round/seconds": 12.5,
        "train/train-loss": 2.0,
        "train/train-steps": 3.0,
        "evaluate/eval-loss": 1.75,
        "evaluate/action-mse": 0.5,
        "client/11/train/train-loss": 2.25,
        "client/11/train/num-examples": 8,
        "client/22/train/train-loss": 1.75,
        "client/22/train/num-examples": 8,
        "client/11/evaluate/eval-loss": 1.5,
        "client/11/evaluate/action-mse": 0.25,
        "client/11/evaluate/num-examples": 4,
    }


def test_flatten_a_round_without_evaluation():
    assert tracking.flatten(ROUND_2) == {
        "updates/accepted": 1,
        "updates/rejected": 1,
        "round/seconds": 10.0,
        "train/train-loss": 1.25,
        "train/train-steps": 3.0,
        "client/11/train/train-loss": 1.25,
        "client/11/train/num-examples": 8,
    }


def test_a_disabled_tracker_does_nothing_and_never_imports_wandb(tmp_path):
    code = (
        "import sys, pathlib\n"
        "from zk0.tracking import Tracker\n"
        f"d = pathlib.Path({str(tmp_path / 'w')!r})\n"
        "t = Tracker.start(False, project='p', run_name='r', config={}, directory=d)\n"
        "t.log_round({'round': 1, 'accepted': 1}); t.finish(); t.finish()\n"
        "print(t.enabled, 'wandb' in sys.modules)\n"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.split() == ["False", "False"]
    assert not (tmp_path / "w").exists()


def test_an_offline_run_records_each_round_under_the_given_directory(offline, tmp_path, capfd):
    offline.setenv("WANDB_API_KEY", PLANTED_KEY)
    directory = tmp_path / "server" / "wandb"

    tracker = tracking.Tracker.start(
        True, project="zk0-test", run_name="session-1", config={"local-steps": 3}, directory=directory
    )
    tracker.log_round(ROUND_1)
    tracker.log_round(ROUND_2)
    tracker.finish()
    tracker.finish()
    import wandb

    wandb.teardown()  # stops wandb's writer service, so its run file is complete before it is read

    runs = list(directory.glob("wandb/offline-run-*"))
    assert len(runs) == 1
    (run_file,) = runs[0].glob("*.wandb")
    rows = _history(run_file)
    assert [row["_step"] for row in rows] == [1, 2]
    for row, record in zip(rows, (ROUND_1, ROUND_2), strict=True):
        assert {k: v for k, v in row.items() if not k.startswith("_")} == tracking.flatten(record)
    assert not tracker.enabled
    assert capfd.readouterr().out == ""  # nothing from wandb on stdout


def test_the_api_key_is_written_nowhere(offline, tmp_path):
    offline.setenv("WANDB_API_KEY", PLANTED_KEY)

    tracker = tracking.Tracker.start(
        True, project="zk0-test", run_name="s", config={"seed": 0}, directory=tmp_path / "server" / "wandb"
    )
    tracker.log_round(ROUND_1)
    tracker.finish()

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    assert [p for p in files if PLANTED_KEY.encode() in p.read_bytes()] == []


def test_a_run_that_cannot_start_leaves_tracking_off_with_a_warning(offline, tmp_path, zk0_log):
    offline.setenv("WANDB_MODE", "not-a-mode")  # wandb.init refuses it

    tracker = tracking.Tracker.start(True, project="p", run_name="r", config={}, directory=tmp_path / "wandb")
    tracker.log_round(ROUND_1)
    tracker.finish()

    assert not tracker.enabled
    (warning,) = {r.getMessage() for r in zk0_log.records if r.name == "zk0.tracking"}
    assert warning.startswith("wandb: could not start a run, tracking is off") and "\n" not in warning
