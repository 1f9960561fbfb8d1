"""Warm ClientApp processes: zk0's flwr-clientapp shim and the launcher that forks Flower's ClientApp for it.

Real processes throughout: the launcher runs a stand-in "SuperNode" (a script
that records the environment it was given), and the shim runs Flower's own
``flwr-clientapp`` in a fork of the launcher.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from zk0.deploy import warm

LIGHT = "flwr.supernode.cli"  # the tests preload only this: the real list takes ~10 s
RECORD = (
    "import json, os, sys, time; json.dump(dict(os.environ), open(sys.argv[1], 'w')); time.sleep(float(sys.argv[2]))"
)
DEAF = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "  # a node that ignores SIGTERM


def _launch(tmp_path: Path, seconds: float = 120, prefix: str = "") -> tuple[subprocess.Popen, dict[str, str]]:
    """A launcher whose node records its environment and sleeps; returns it and that environment."""
    seen = tmp_path / "node-env.json"
    node = [sys.executable, "-c", prefix + RECORD, str(seen), str(seconds)]
    cmd = [sys.executable, "-m", "zk0.deploy.warm", "--preload", LIGHT, "--", *node]
    log = open(tmp_path / "launcher.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 60
    while not seen.exists() or not seen.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "launcher.log").read_text()
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written in one go; let it close
    return proc, json.loads(seen.read_text())


def _wait_log(tmp_path: Path, text: str, count: int = 1) -> str:
    deadline = time.monotonic() + 30
    while (log := (tmp_path / "launcher.log").read_text()).count(text) < count:
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    return log


@pytest.fixture
def launched(tmp_path):
    proc, env = _launch(tmp_path)
    yield proc, env
    proc.terminate()
    proc.wait(30)


def test_the_node_finds_the_shim_first_on_its_path(launched):
    _, env = launched
    shim = Path(env["PATH"].split(os.pathsep)[0]) / "flwr-clientapp"
    assert os.access(shim, os.X_OK) and "zk0.deploy.warm" in shim.read_text()
    assert env[warm.SOCKET_ENV].startswith("zk0-warm-")


def test_a_message_runs_flower_clientapp_in_a_fork_of_the_launcher(launched, tmp_path):
    proc, env = launched
    _wait_log(tmp_path, "each message forks from here")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    shown = subprocess.run(
        ["flwr-clientapp", "--help"], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=30, check=False
    )
    assert shown.returncode == 0 and shown.stdout.startswith("usage: flwr-clientapp")  # its stdout is the shim's
    refused = subprocess.run(["flwr-clientapp"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 2 and "--token" in refused.stderr  # Flower's exit code, relayed
    assert _wait_log(tmp_path, "a message runs as pid").count("a message runs as pid") == 2

    # A message that waits for its SuperNode: the child is the launcher's, in the shim's cwd; SIGTERM reaches it.
    waiting = subprocess.Popen(
        ["flwr-clientapp", "--runtime-api-address", "127.0.0.1:9", "--token", "t", "--insecure"],
        env=env,
        cwd=elsewhere,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = _wait_log(tmp_path, "a message runs as pid", 3)
    child = psutil.Process(int(log.rsplit("runs as pid ", 1)[1].split()[0]))
    assert child.ppid() == proc.pid and Path(child.cwd()) == elsewhere
    while "Connection attempt failed" not in waiting.stdout.readline():  # Flower's handlers are in place
        pass
    waiting.terminate()
    out, _ = waiting.communicate(timeout=60)
    assert "Task stopped." in out  # Flower's own handler in the child got the signal
    assert not child.is_running()


def test_the_shim_runs_flower_itself_when_no_launcher_answers(tmp_path):
    shim = [sys.executable, "-c", "from zk0.deploy.warm import shim; shim()", "--help"]
    for socket_path in ("", str(tmp_path / "no-such-socket")):
        env = {**os.environ, warm.SOCKET_ENV: socket_path}
        shown = subprocess.run(shim, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert shown.returncode == 0 and "(--token TOKEN | --token-file TOKEN_FILE)" in shown.stdout, shown.stderr


def test_the_launcher_ends_with_its_node_and_leaves_nothing(tmp_path):
    proc, env = _launch(tmp_path, seconds=1)
    assert proc.wait(60) == 0
    assert not Path(env["PATH"].split(os.pathsep)[0]).exists()
    assert "the SuperNode exited with code 0" in (tmp_path / "launcher.log").read_text()


def test_sigterm_stops_the_launcher_and_its_node(tmp_path):
    proc, _ = _launch(tmp_path)
    node = psutil.Process(proc.pid).children()[0]
    proc.terminate()
    assert proc.wait(30) == 0
    node.wait(10)
    assert not list(tmp_path.glob("zk0-warm-*"))


def test_requests_cut_short_or_stalled_leave_no_descriptors_and_hold_up_no_one(launched, tmp_path):
    proc, env = launched
    _wait_log(tmp_path, "each message forks from here")
    descriptors = len(os.listdir(f"/proc/{proc.pid}/fd"))
    for _ in range(20):  # a shim killed after sending its streams, before its request
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect("\0" + env[warm.SOCKET_ENV])
            socket.send_fds(conn, [struct.pack("<i", 100)], [0, 1, 2])
    _wait_log(tmp_path, "dropped a malformed request", 20)
    assert len(os.listdir(f"/proc/{proc.pid}/fd")) == descriptors

    with socket.socket(socket.AF_UNIX) as stalled:  # sends its streams, then nothing
        stalled.connect("\0" + env[warm.SOCKET_ENV])
        socket.send_fds(stalled, [struct.pack("<i", 100)], [0, 1, 2])
        shown = subprocess.run(["flwr-clientapp", "--help"], env=env, capture_output=True, timeout=30, check=False)
    assert shown.returncode == 0  # served once the stalled request timed out
    assert "dropped a malformed request (timed out)" in (tmp_path / "launcher.log").read_text()


def test_a_second_signal_does_not_cut_the_clean_up_short(tmp_path):
    proc, env = _launch(tmp_path, prefix=DEAF)
    node = psutil.Process(proc.pid).children()[0]
    proc.terminate()
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # while the launcher waits for its deaf node

    assert proc.wait(60) == 0
    node.wait(10)  # killed once it ignored SIGTERM for 10 s
    assert not Path(env["PATH"].split(os.pathsep)[0]).exists()


def test_a_child_that_fails_to_flush_its_output_exits_without_touching_the_launcher(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the launcher's buffered stdout is its children's
    proc, env = _launch(tmp_path)
    try:
        _wait_log(tmp_path, "each message forks from here")
        with open("/dev/full", "w") as full:  # every write fails: no space left on device
            subprocess.run(["flwr-clientapp", "--help"], env=env, stdout=full, timeout=30, check=False)

        _wait_log(tmp_path, "a message runs as pid")
        shown = subprocess.run(["flwr-clientapp", "--help"], env=env, capture_output=True, text=True, timeout=30)
        assert proc.poll() is None and Path(env["PATH"].split(os.pathsep)[0]).is_dir()
        assert shown.stdout.startswith("usage: flwr-clientapp")
        assert _wait_log(tmp_path, "a message runs as pid", 2)  # still warm
    finally:
        proc.terminate()
        proc.wait(30)
