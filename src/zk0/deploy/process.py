"""Start and stop background processes by process group, with their output in a log file."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (process group), stdout+stderr appended to ``log_path``.

    Flower's usage telemetry is off unless the environment turns it on: it reports to Flower Labs
    from every process, and each ClientApp process waits up to 4 s at exit on a network that drops it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {"FLWR_TELEMETRY_ENABLED": "0", **(os.environ if env is None else env)}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM ``pid`` and all its descendants, then SIGKILL whatever is left after ``timeout``.

    Descendants matter: Flower's SuperLink and SuperNode start ``flower-superexec``
    in a session of its own, so signalling the process group alone misses it.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(procs, timeout=timeout)
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=5)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bind_error(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now, or None if it could (TIME_WAIT does not count)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        return f"host {host!r} does not resolve ({err.strerror})"
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use; pick another with --port"
            return f"cannot listen on {host}:{port} ({err.strerror}); is {host} an address of this machine?"
    return None


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on host:port; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with code {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def write_pid(path: Path, pid: int) -> None:
    """Record ``pid`` with its start time, so a reused pid is never mistaken for ours."""
    import psutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid} {psutil.Process(pid).create_time()}\n")
    tmp.replace(path)


def live_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that process still runs; a stale file is removed."""
    import psutil

    try:
        pid_text, created = path.read_text().split()
        pid = int(pid_text)
        proc = psutil.Process(pid)
        if abs(proc.create_time() - float(created)) < 1e-3 and proc.status() != psutil.STATUS_ZOMBIE:
            return pid
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, psutil.NoSuchProcess):
        pass
    path.unlink(missing_ok=True)
    return None


def wait_for_line(path: Path, text: str, timeout: float, proc: subprocess.Popen, offset: int = 0) -> None:
    """Wait until ``text`` appears in ``path`` after byte ``offset``; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                if text.encode() in fh.read():
                    return
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with code {proc.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"'{text}' did not appear in {path} after {timeout:.0f} s")
