"""Pid files and process-tree shutdown, on real child processes."""

import os
import socket
import sys
import time

import psutil

from zk0.deploy.process import bind_error, live_pid, spawn, stop_tree, write_pid


def test_live_pid_keeps_a_running_process_and_removes_a_stale_file(tmp_path):
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleep.log")
    pid_file = tmp_path / "sleep.pid"
    write_pid(pid_file, proc.pid)

    assert live_pid(pid_file) == proc.pid
    stop_tree(proc.pid, timeout=5)
    proc.wait()
    assert live_pid(pid_file) is None
    assert not pid_file.exists(), "a stale pid file is cleaned up"


def test_a_reused_pid_is_not_mistaken_for_ours(tmp_path):
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{psutil.Process().pid} 12345.0\n")  # our pid, another start time

    assert live_pid(pid_file) is None


def test_stop_tree_stops_children_in_their_own_session(tmp_path):
    # The child starts a grandchild in a new session, as Flower does with flower-superexec.
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
        "time.sleep(60)"
    )
    proc = spawn([sys.executable, "-c", code], tmp_path / "tree.log")
    for _ in range(50):
        children = psutil.Process(proc.pid).children(recursive=True)
        if children:
            break
        time.sleep(0.1)
    assert children

    stop_tree(proc.pid, timeout=5)

    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_bind_error_says_why_a_server_could_not_listen():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert "is in use" in bind_error("127.0.0.1", port)
    assert bind_error("127.0.0.1", port) is None
    assert "does not resolve" in bind_error("nosuch.invalid", port)
    assert "is 10.254.254.254 an address of this machine?" in bind_error("10.254.254.254", port)


def test_spawned_processes_have_flower_telemetry_off_unless_asked_for(tmp_path, monkeypatch):
    show = [sys.executable, "-c", "import os; print(os.environ.get('FLWR_TELEMETRY_ENABLED'))"]
    monkeypatch.delenv("FLWR_TELEMETRY_ENABLED", raising=False)
    spawn(show, tmp_path / "off.log").wait(30)
    spawn(show, tmp_path / "on.log", env={**os.environ, "FLWR_TELEMETRY_ENABLED": "1"}).wait(30)

    assert (tmp_path / "off.log").read_text().strip() == "0"
    assert (tmp_path / "on.log").read_text().strip() == "1"
