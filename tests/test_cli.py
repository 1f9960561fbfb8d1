"""zk0bot: error paths in-process, and the lifecycle and demo with real processes."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from odd_datasets import CAM, IMAGE, vector, write_dataset
from processes import ZK0BOT, leftover, status, tiny_sets, wait_for, zk0bot
from zk0 import checkpoints
from zk0.cli import main
from zk0.deploy.process import free_port


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_help_lists_every_command(capsys):
    code, out, _ = run_cli(["--help"], capsys)

    assert code == 0
    for command in ("server", "client", "status", "demo"):
        assert command in out


@pytest.fixture
def seven_dim(tmp_path) -> Path:
    root = tmp_path / "seven"
    write_dataset(root, {"observation.state": vector(7), "action": vector(6), f"{CAM}front": IMAGE})
    return root


@pytest.fixture
def no_action(tmp_path) -> Path:
    root = tmp_path / "noaction"
    write_dataset(root, {"observation.state": vector(6), f"{CAM}front": IMAGE})
    return root


def test_client_start_rejects_bad_datasets_with_one_line(tmp_path, seven_dim, no_action, capsys):
    (tmp_path / "plain").mkdir()
    cases = {
        "": "must be 'hf:owner/name",
        "s3://bucket/ds": "unknown scheme 's3'",
        "hf:nameonly": "expected 'hf:owner/name'",
        f"local:{tmp_path / 'missing'}": "does not exist",
        f"local:{tmp_path / 'plain'}": "is not a LeRobot dataset",
        f"local:{seven_dim}": "'observation.state' has shape (7,), expected (6,)",
        f"local:{no_action}": "has no 'action' feature",
    }
    for uri, message in cases.items():
        code, out, err = run_cli(["client", "start", uri, "--state-dir", str(tmp_path / "state")], capsys)

        assert code == 2, uri
        assert err.startswith("Error: ") and message in err and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "state" / "clients").exists(), "nothing half-written"


SO100 = {"observation.state": vector(6), "action": vector(6), f"{CAM}front": IMAGE}


def damage(kit_dataset: Path, root: Path, how: str) -> Path:
    """A copy of a good dataset with one file made bad."""
    shutil.copytree(kit_dataset, root)
    if how == "corrupt info.json":
        (root / "meta" / "info.json").write_text('{"codebase_version": ')
    elif how == "unreadable info.json":  # tests run as root, so a mode bit would not stop the read
        (root / "meta" / "info.json").unlink()
        (root / "meta" / "info.json").mkdir()
    elif how == "corrupt data parquet":
        data = next((root / "data").rglob("*.parquet"))
        data.write_bytes(data.read_bytes()[:300])
    elif how == "corrupt episodes parquet":
        episodes = next((root / "meta" / "episodes").rglob("*.parquet"))
        episodes.write_bytes(episodes.read_bytes()[:100])
    elif how == "missing data file":
        next((root / "data").rglob("*.parquet")).unlink()
    return root


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("corrupt info.json", "cannot read its metadata (Expecting value"),
        ("unreadable info.json", "cannot read its metadata (Is a directory)"),
        ("corrupt data parquet", "Parquet magic bytes not found"),
        ("corrupt episodes parquet", "cannot read its metadata (Parquet magic bytes not found"),
        ("missing data file", "its data files hold 0 frames, meta/info.json says"),
    ],
)
def test_client_start_rejects_damaged_datasets_before_starting(kit, tmp_path, capsys, how, message):
    root = damage(kit.datasets[0], tmp_path / "copy", how)

    code, _, err = run_cli(["client", "start", f"local:{root}", "--state-dir", str(tmp_path / "state")], capsys)

    assert code == 2 and err.startswith("Error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "state" / "clients").exists()


def test_client_start_rejects_a_dataset_with_no_episodes(tmp_path, capsys):
    write_dataset(tmp_path / "empty", SO100, episodes=0)

    code, _, err = run_cli(["client", "start", f"local:{tmp_path / 'empty'}", "--state-dir", str(tmp_path)], capsys)

    assert code == 2 and "has no episodes" in err and err.count("\n") == 1


def test_client_start_needs_a_resolvable_server(kit, tmp_path, capsys):
    uri = f"local:{kit.datasets[0]}"

    code, _, err = run_cli(
        ["client", "start", uri, "--server", "nosuch.invalid:8000", "--state-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "server nosuch.invalid:8000 is unreachable" in err and err.count("\n") == 1

    code, _, err = run_cli(["client", "start", uri, "--server", "no-port", "--state-dir", str(tmp_path)], capsys)
    assert code == 2 and "must be HOST:PORT" in err
    assert not (tmp_path / "clients").exists()


def test_client_start_needs_a_reachable_server(kit, tmp_path, capsys):
    port = free_port()

    code, _, err = run_cli(
        ["client", "start", f"local:{kit.datasets[0]}", "--server", f"127.0.0.1:{port}", "--state-dir", str(tmp_path)],
        capsys,
    )

    assert code == 2 and f"server 127.0.0.1:{port} is unreachable" in err
    assert not (tmp_path / "clients").exists()


def test_unknown_client_and_missing_name(tmp_path, capsys):
    code, _, err = run_cli(["client", "stop", "nosuch", "--state-dir", str(tmp_path)], capsys)
    assert code == 2 and "no client named 'nosuch'" in err

    code, _, err = run_cli(["client", "stop", "--state-dir", str(tmp_path)], capsys)
    assert code == 2 and "--all" in err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("local-steps=-1", "'local-steps' must be >= 1"),
        ("wire-dtype=float16", "'wire-dtype' must be one of"),
        ("proximal-mu=-0.5", "'proximal-mu' must be >= 0.0"),
        ("local-epochs=2", "unknown setting(s) local-epochs"),
        ("batch-size=eight", "'batch-size' must be int, got 'eight'"),
        ("novalue", "must be key=value"),
        ('hub-repo-id="a/b/c"', "'hub-repo-id' must be 'name' or 'owner/name'"),
        ("use-wandb=true", "WANDB_API_KEY"),
        ('eval-dataset-uri="s3://x/y"', "unknown scheme 's3'"),
    ],
)
def test_server_start_rejects_bad_settings_before_starting_anything(tmp_path, capsys, monkeypatch, setting, message):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    code, _, err = run_cli(["server", "start", "--state-dir", str(tmp_path), "--set", setting], capsys)

    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "superlink").exists()


def test_server_start_refuses_a_port_in_use_and_an_unwritable_state_dir(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(["server", "start", "--state-dir", str(tmp_path), "--port", str(port)], capsys)
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in err

    code, _, err = run_cli(["server", "start", "--state-dir", str(tmp_path / "s"), "--host", "nosuch.invalid"], capsys)
    assert code == 2 and "host 'nosuch.invalid' does not resolve" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()

    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(["server", "start", "--state-dir", str(blocker / "state")], capsys)
    assert code == 2 and "is not writable" in err


def test_status_json_with_nothing_running(tmp_path):
    data = json.loads(zk0bot("status", "--json", state=tmp_path).stdout)

    assert data["server"]["up"] is False and data["clients"] == [] and data["session"] is None


@pytest.mark.slow
def test_always_on_server_starts_sessions_as_clients_come_and_go(kit, tmp_path):
    state = tmp_path / "state"
    port = free_port()
    sets = tiny_sets(kit.backbone)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        started = zk0bot(
            "server", "start", "--port", str(port), "--min-clients", "2", "--rounds", "1", *sets, state=state
        )
        assert started.returncode == 0, started.stderr
        again = zk0bot("server", "start", "--port", str(port), state=state)
        assert again.returncode == 2 and "already running" in again.stderr

        server = f"--server=127.0.0.1:{port}"
        for name, dataset in (("a", kit.datasets[0]), ("b", kit.datasets[1])):
            result = zk0bot(
                "client", "start", f"local:{dataset}", server, f"--name={name}", "--num-workers=0", state=state
            )
            assert result.returncode == 0, result.stderr
            assert "under 100" in result.stderr  # the small-dataset warning
        dup = zk0bot("client", "start", f"local:{kit.datasets[0]}", server, "--name=a", state=state)
        assert dup.returncode == 2 and "already running" in dup.stderr

        first = wait_for(lambda: (status(state)["session"] or {}).get("run-id"), 180, "the first session")
        # One client leaves mid-session: no second session starts while it runs short-handed.
        assert zk0bot("client", "stop", "b", state=state).returncode == 0
        time.sleep(10)
        assert status(state)["session"]["run-id"] == first
        # A third client joins: the session finishes and the next one starts by itself.
        result = zk0bot(
            "client", "start", f"local:{kit.datasets[1]}", server, "--name=c", "--num-workers=0", state=state
        )
        assert result.returncode == 0, result.stderr
        second = wait_for(
            lambda: (s := status(state)["session"]) and s["run-id"] != first and s["run-id"], 600, "the next session"
        )
        assert second != first

        shown = status(state)
        assert shown["server"]["up"] and shown["online-nodes"] == 2
        assert {c["name"]: c["up"] for c in shown["clients"]} == {"a": True, "b": False, "c": True}
        assert shown["last-round"]["run-id"] == first and shown["last-round"]["round"] == 1
        log = (state / "superlink" / "controller.log").read_text()
        assert f"started session {first}" in log and f"session {first} finished: completed" in log
        assert f"started session {second}" in log
        # Each message's ClientApp was forked from the client's warm launcher, not started cold.
        node_log = (state / "clients" / "a" / "supernode.log").read_text()
        assert "each message forks from here" in node_log and "a message runs as pid" in node_log
        assert "multi-threaded" not in node_log  # Python's fork warning, silenced for the fork-safe threads
        # The next session continues from the first one's checkpoint: its first round is round 2.
        resumed = wait_for(
            lambda: [h for h in checkpoints.read_history(state / "server") if h["run-id"] == second], 300, "a round"
        )
        assert resumed[0]["round"] == 2
    finally:
        zk0bot("client", "stop", "--all", state=state)
        zk0bot("server", "stop", state=state)
    assert leftover(state) == ""
    assert status(state)["server"]["up"] is False


@pytest.mark.slow
def test_demo_runs_a_round_offline_and_stops_what_it_started(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)}

    result = subprocess.run(
        [ZK0BOT, "demo", "--rounds", "2", "--local-steps", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 1/2: 2 updates" in result.stderr and "round 2/2: 2 updates" in result.stderr
    assert "round 0 (untrained): eval loss" in result.stderr
    summary, report = result.stdout.split("zk0: 3 round(s)")
    assert "zk0 demo: 2 rounds" in summary
    # The summary reports a train loss for both clients in every round.
    rows = [line for line in summary.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and all(len(re.findall(r"\d+\.\d{3}", row.split("│")[3])) == 2 for row in rows)
    # Then zk0bot report's table (round 0 has no training), its plot, and the exported policy acting.
    table = [line.split("│")[1:-1] for line in report.splitlines() if line.startswith("│")]
    assert [cells[0].strip() for cells in table] == ["0", "1", "2"] and table[0][1].strip() == "-"
    (png,) = re.findall(r"plot: (\S+\.png)", result.stderr)
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "predicted an action chunk of shape (1, 10, 6)" in result.stderr
    assert leftover(tmp_path) == ""


def test_server_log_shows_the_last_lines_of_each_log(tmp_path, capsys):
    logs = tmp_path / "superlink"
    logs.mkdir()
    (logs / "superlink.log").write_text("".join(f"link {i}\n" for i in range(10)))
    (logs / "controller.log").write_text("ctl 1\nctl 2\n")

    code, out, _ = run_cli(["server", "log", "-n", "2", "--state-dir", str(tmp_path)], capsys)

    assert code in (0, None)
    assert "link 8\nlink 9\n" in out and "link 7" not in out and "ctl 1\nctl 2\n" in out


@pytest.mark.slow
def test_foreground_server_stops_everything_on_sigterm(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    proc = subprocess.Popen(
        [ZK0BOT, "server", "start", "--foreground", "--port", str(port), "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: status(state)["server"]["controller-pid"], 120, "the foreground server")
        pids = status(state)["server"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert not any(psutil.pid_exists(pids[k]) for k in ("superlink-pid", "controller-pid"))
    assert leftover(state) == ""
