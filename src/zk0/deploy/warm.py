"""Warm ClientApp processes: each message's ``flwr-clientapp`` forked from a process that imported its libraries.

Flower's SuperNode runs a fresh ``flwr-clientapp``, found by name on ``PATH``,
for every message, and each spends ~10 s of CPU importing torch, transformers
and lerobot before it does anything. A client's launcher (``python -m
zk0.deploy.warm -- flower-supernode ...``) starts the SuperNode with zk0's own
``flwr-clientapp`` first on its ``PATH``, imports those libraries once and
listens on an abstract Unix socket that admits only this user's processes.
zk0's ``flwr-clientapp``
(:func:`shim`) hands its arguments, environment, working directory and
standard streams to the launcher, which forks a child that runs Flower's
``flwr-clientapp`` with them; the shim relays SIGTERM/SIGINT to the child and
exits with its status. Without a launcher to reach, the shim runs Flower's
``flwr-clientapp`` itself, as a cold process would.

Only third-party libraries are imported ahead: zk0's own modules are imported
by each child, as by a cold process. A library upgraded under a running
client is seen after ``zk0bot client stop`` and ``start``.

Forking a process that imported these libraries is what PyTorch's own
DataLoader workers do: nothing here starts CUDA or torch's thread pools, and
the only other threads are OpenBLAS's pools (numpy, OpenCV) and pyarrow's
jemalloc thread, which all reset themselves in a fork's child
(``pthread_atfork``). Python 3.12 warns about any fork with threads; that
warning is silenced for this one call.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from zk0.deploy.process import stop_tree

SOCKET_ENV = "ZK0_WARM_SOCKET"
# What every message imports, slowest first (lerobot's policies pull in transformers).
PRELOAD = (
    "torch",
    "lerobot.policies.smolvla.modeling_smolvla",
    "lerobot.policies.factory",
    "lerobot.datasets.lerobot_dataset",
    "lerobot.datasets.factory",
    "flwr.clientapp",
    "flwr.supernode.cli",
)
_INT = struct.Struct("<i")
_CREDENTIALS = struct.Struct("iII")  # SO_PEERCRED: pid, uid, gid
_STREAMS = 3  # stdin, stdout, stderr
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_REQUEST_SECONDS = 5  # a shim sends its request at once; one that stalls must not hold up the others


def launcher(node_cmd: list[str]) -> list[str]:
    """The command that runs ``node_cmd`` (a SuperNode) with warm ClientApp processes."""
    return [sys.executable, "-m", "zk0.deploy.warm", "--", *node_cmd]


def _say(text: str) -> None:
    print(f"zk0 warm clientapp: {text}", flush=True)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


# --- the shim: Flower runs it as flwr-clientapp ---------------------------------------------------


def shim() -> None:
    """``flwr-clientapp`` for the SuperNode: run by the launcher's warm fork, else by Flower in this process."""
    conn = _connect(os.environ.get(SOCKET_ENV, ""))
    pid = _request(conn) if conn is not None else None
    if pid is None:
        from flwr.supernode.cli import flwr_clientapp

        sys.exit(flwr_clientapp())

    def relay(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except OSError:
            pass  # it has exited; its status is on the way

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, relay)
    try:
        code = _INT.unpack(_recv_exact(conn, _INT.size))[0]
    except OSError:  # the launcher went away: the child's status is unknown
        code = 1
    sys.exit(code)


def _connect(name: str) -> socket.socket | None:
    if not name:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect("\0" + name)
    except OSError:
        conn.close()
        return None
    return conn


def _request(conn: socket.socket) -> int | None:
    """Send this process's argv, environment, cwd and streams; the warm child's pid, or None if refused."""
    payload = json.dumps({"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    try:
        socket.send_fds(conn, [_INT.pack(len(payload))], list(range(_STREAMS)))
        conn.sendall(payload)
        return _INT.unpack(_recv_exact(conn, _INT.size))[0]
    except OSError:
        conn.close()
        return None


# --- the launcher: the SuperNode, then a fork per message -----------------------------------------


class _Stop(Exception):
    """SIGTERM or SIGINT reached the launcher."""


def _stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def serve(node_cmd: list[str], preload: tuple[str, ...] = PRELOAD) -> int:
    """Run ``node_cmd`` with warm ClientApp processes until it exits; its exit code (0 when stopped)."""
    # Abstract (no file, no path length limit); _fork admits only this user's processes.
    name = f"zk0-warm-{os.getpid()}-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen(16)  # shims wait in the backlog while the imports run
    private = Path(tempfile.mkdtemp(prefix="zk0-warm-"))  # holds the shim
    script = private / "flwr-clientapp"
    script.write_text(f"#!{sys.executable}\nfrom zk0.deploy.warm import shim\nshim()\n")
    script.chmod(0o755)
    env = {**os.environ, SOCKET_ENV: name, "PATH": f"{private}{os.pathsep}{os.environ.get('PATH', '')}"}
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _stop)
    node = subprocess.Popen(node_cmd, env=env)
    children: dict[int, socket.socket] = {}
    try:
        _preload(preload)
        while node.poll() is None:
            if select.select([listener], [], [], 0.2)[0]:
                conn, _ = listener.accept()
                _fork(conn, listener, children)
            _reap(children)
        _say(f"the SuperNode exited with code {node.returncode}")
        return node.returncode
    except _Stop:
        return 0
    finally:
        for sig in _STOP_SIGNALS:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        running = [node.pid] if node.poll() is None else []  # a reaped node's pid may be another's by now
        for pid in (*running, *children):  # the SuperNode with its flower-superexec, then the messages
            stop_tree(pid)
        listener.close()
        shutil.rmtree(private, ignore_errors=True)


def _preload(modules: tuple[str, ...]) -> None:
    started = time.monotonic()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:  # each child imports what it needs anyway
            _say(f"could not import {name} ahead ({err}); messages import it themselves")
    _say(f"imported {len(modules)} libraries in {time.monotonic() - started:.1f} s; each message forks from here")


def _fork(conn: socket.socket, listener: socket.socket, children: dict[int, socket.socket]) -> None:
    _, uid, _ = _CREDENTIALS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
    if uid != os.getuid():
        _say(f"refused a request from user {uid}")
        conn.close()
        return
    conn.settimeout(_REQUEST_SECONDS)
    fds: list[int] = []
    try:
        head, fds, _, _ = socket.recv_fds(conn, _INT.size, _STREAMS)
        if len(fds) != _STREAMS:
            raise ValueError("not sent with its three standard streams")
        head += _recv_exact(conn, _INT.size - len(head))
        request = json.loads(_recv_exact(conn, _INT.unpack(head)[0]))
    except (OSError, ValueError) as err:
        for fd in fds:
            os.close(fd)
        _say(f"dropped a malformed request ({err})")
        conn.close()
        return
    # Signals wait until the child is on its own and the parent has recorded it.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        with warnings.catch_warnings():  # the threads are fork-safe (module docstring)
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                _child(request, fds, [listener, conn, *children.values()])
            finally:
                os._exit(1)  # whatever happens, a child never returns into the launcher's code
        children[pid] = conn
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(_INT.pack(pid))
    except OSError:
        pass  # the shim is gone; the child still runs and is reaped
    _say(f"a message runs as pid {pid}")


def _child(request: dict, fds: list[int], inherited: list[socket.socket]) -> None:
    """In the forked child: become the shim's ``flwr-clientapp`` process, then exit."""
    code = 1
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        for sock in inherited:
            sock.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = request["argv"]
        random.seed()  # forked children must not share the launcher's random state
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        from flwr.supernode.cli import flwr_clientapp

        flwr_clientapp()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    except BaseException:  # noqa: BLE001 - reported on the shim's stderr, as a cold process would
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001, S110 - a full disk or a signal: exit all the same
                pass
        os._exit(code)


def _reap(children: dict[int, socket.socket]) -> None:
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            continue
        conn = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        try:
            conn.sendall(_INT.pack(code if code >= 0 else 128 - code))
        except OSError:
            pass
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m zk0.deploy.warm", description=__doc__.splitlines()[0])
    parser.add_argument("--preload", nargs="*", default=list(PRELOAD), help="modules to import ahead")
    parser.add_argument("node_cmd", nargs=argparse.REMAINDER, help="-- then the SuperNode's command line")
    args = parser.parse_args()
    cmd = args.node_cmd[1:] if args.node_cmd[:1] == ["--"] else args.node_cmd
    if not cmd:
        parser.error("give the SuperNode's command after --")
    sys.exit(serve(cmd, tuple(args.preload)))


if __name__ == "__main__":
    main()
