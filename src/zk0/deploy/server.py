"""The always-on server: a SuperLink plus the session controller, supervised by pid files.

Layout under the state dir: ``superlink/`` (pid and log files, the SuperLink
database with the registered node keys, ``server.json``), ``server/``
(checkpoints and history, written by the ServerApp), ``tls/`` (the CA and the
server certificate), ``flwr/`` (Flower's home for the SuperLink side).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zk0.deploy import DeployError, ensure_writable, flower, tls
from zk0.deploy.controller import READY
from zk0.deploy.process import bind_error, live_pid, spawn, stop_tree, wait_for_line, wait_for_port, write_pid
from zk0.errors import RuntimeFailure
from zk0.paths import ENV_HOME


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    min_clients: int = 2
    # Run-config overrides for every session (num-server-rounds, min-clients, --set ...).
    overrides: dict[str, Any] = field(default_factory=dict)
    # TLS with node authentication; the default everywhere but on loopback.
    tls: bool = False
    # Extra names (DNS or IP) the server certificate is valid for, besides the host and loopback.
    names: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def local_address(self) -> str:
        """Where processes on this host reach the SuperLink (loopback when it listens on all interfaces)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def process_env(state: Path, flwr_home: Path) -> dict[str, str]:
    """Environment of every process zk0 starts: its state dir, Flower's home, Flower's executables on PATH."""
    bin_dir = str(Path(flower.executable("flwr")).parent)
    return {
        **os.environ,
        ENV_HOME: str(state),
        "FLWR_HOME": str(flwr_home),
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }


class Server:
    """Start, stop and inspect the server whose state lives in ``state``."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.dir = state / "superlink"

    @property
    def tls(self) -> tls.ServerTls:
        return tls.ServerTls(self.state / "tls")

    @property
    def superlink_pid(self) -> Path:
        return self.dir / "superlink.pid"

    @property
    def controller_pid(self) -> Path:
        return self.dir / "controller.pid"

    @property
    def superlink_log(self) -> Path:
        return self.dir / "superlink.log"

    @property
    def controller_log(self) -> Path:
        return self.dir / "controller.log"

    @property
    def session_log(self) -> Path:
        """The ServerApp's log of every session (rounds, rejected updates, warnings), as the controller follows it."""
        return self.dir / "sessions.log"

    def settings(self) -> ServerSettings | None:
        path = self.dir / "server.json"
        return ServerSettings(**json.loads(path.read_text())) if path.exists() else None

    def running(self) -> dict[str, int | None]:
        return {"superlink": live_pid(self.superlink_pid), "controller": live_pid(self.controller_pid)}

    def init_tls(self, host: str, names: list[str]) -> tls.ServerTls:
        """The CA and a server certificate for ``host`` and ``names`` (made once, reused after)."""
        ensure_writable(self.state)
        return tls.init_server(self.tls.directory, tls.server_names(host, names))

    def control(self, wait: float = 0.0):
        """A Control API client for the running server (TLS when it runs with TLS), waiting up to ``wait`` s for it."""
        from zk0.deploy.control import Control

        deadline = time.monotonic() + wait
        while not self.reachable():
            if time.monotonic() >= deadline:
                raise DeployError(
                    f"the server is not running (state dir {self.state}); start it with 'zk0bot server start'"
                )
            time.sleep(1.0)
        settings = self.settings()
        return Control(settings.local_address, root_certificates=self.tls.ca_cert if settings.tls else None)

    def reachable(self) -> bool:
        """The SuperLink runs and accepts connections."""
        settings = self.settings()
        if settings is None or self.running()["superlink"] is None:
            return False
        host, _, port = settings.local_address.rpartition(":")
        with socket.socket() as s:
            s.settimeout(1.0)
            return s.connect_ex((host, int(port))) == 0

    def start(self, settings: ServerSettings) -> None:
        """Start the SuperLink and the controller in the background; refuse a second start."""
        if any(self.running().values()):
            raise DeployError(
                f"the server is already running (state dir {self.state}); stop it with 'zk0bot server stop'"
            )
        if reason := bind_error(settings.host, settings.port):
            raise DeployError(reason)
        ensure_writable(self.state)
        material = self.init_tls(settings.host, settings.names) if settings.tls else None
        env = process_env(self.state, self.state / "flwr")
        (self.state / "flwr").mkdir(parents=True, exist_ok=True)
        link = spawn(
            flower.superlink(host=settings.host, port=settings.port, database=self.dir / "superlink.db", tls=material),
            self.superlink_log,
            env,
        )
        write_pid(self.superlink_pid, link.pid)
        try:
            try:
                wait_for_port(settings.host, settings.port, timeout=60, proc=link)
            except (RuntimeError, TimeoutError) as err:
                raise RuntimeFailure(f"the SuperLink did not start ({err}); see {self.superlink_log}") from None
            offset = self.controller_log.stat().st_size if self.controller_log.exists() else 0
            ctl = spawn(
                [
                    sys.executable,
                    "-m",
                    "zk0.deploy.controller",
                    "--address",
                    settings.local_address,
                    "--min-clients",
                    str(settings.min_clients),
                    "--overrides",
                    json.dumps(settings.overrides),
                    "--session-log",
                    str(self.session_log),
                    *(["--root-certificates", str(material.ca_cert)] if material else []),
                ],
                self.controller_log,
                env,
            )
            write_pid(self.controller_pid, ctl.pid)
            try:
                wait_for_line(self.controller_log, READY, timeout=120, proc=ctl, offset=offset)
            except (RuntimeError, TimeoutError) as err:
                raise RuntimeFailure(
                    f"the session controller did not start ({err}); see {self.controller_log}"
                ) from None
        except BaseException:
            self.stop()
            raise
        (self.dir / "server.json").write_text(json.dumps(asdict(settings)))

    def stop(self, timeout: float = 10.0) -> list[int]:
        """Stop the controller and the SuperLink (whole process trees); returns the pids stopped."""
        stopped = []
        for path in (self.controller_pid, self.superlink_pid):
            if (pid := live_pid(path)) is not None:
                stop_tree(pid, timeout)
                stopped.append(pid)
            path.unlink(missing_ok=True)
        return stopped

    def wait(self) -> None:
        """Block while both processes run (``--foreground``)."""
        while all(self.running().values()):
            time.sleep(1.0)
