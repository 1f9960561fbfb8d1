"""The always-on server: a SuperLink plus the session controller, supervised by pid files.

Layout under the state dir: ``superlink/`` (pid and log files, the SuperLink
database, ``server.json``), ``server/`` (checkpoints and history, written by
the ServerApp), ``flwr/`` (Flower's home for the SuperLink side).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zk0.deploy import DeployError, ensure_writable, flower
from zk0.deploy.process import live_pid, port_free, spawn, stop_tree, wait_for_port, write_pid
from zk0.errors import RuntimeFailure
from zk0.paths import ENV_HOME, source_root


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    min_clients: int = 2
    # Run-config overrides for every session (num-server-rounds, min-clients, --set ...).
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


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

    def settings(self) -> ServerSettings | None:
        path = self.dir / "server.json"
        return ServerSettings(**json.loads(path.read_text())) if path.exists() else None

    def running(self) -> dict[str, int | None]:
        return {"superlink": live_pid(self.superlink_pid), "controller": live_pid(self.controller_pid)}

    def start(self, settings: ServerSettings) -> None:
        """Start the SuperLink and the controller in the background; refuse a second start."""
        ensure_writable(self.state)
        if any(self.running().values()):
            raise DeployError(
                f"the server is already running (state dir {self.state}); stop it with 'zk0bot server stop'"
            )
        if not port_free(settings.host, settings.port):
            raise DeployError(f"port {settings.port} on {settings.host} is in use; pick another with --port")
        env = process_env(self.state, self.state / "flwr")
        (self.state / "flwr").mkdir(parents=True, exist_ok=True)
        link = spawn(
            flower.superlink(host=settings.host, port=settings.port, database=self.dir / "superlink.db"),
            self.superlink_log,
            env,
        )
        write_pid(self.superlink_pid, link.pid)
        try:
            try:
                wait_for_port(settings.host, settings.port, timeout=60, proc=link)
            except (RuntimeError, TimeoutError) as err:
                raise RuntimeFailure(f"the SuperLink did not start ({err}); see {self.superlink_log}") from None
            ctl = spawn(
                [
                    sys.executable,
                    "-m",
                    "zk0.deploy.controller",
                    "--address",
                    settings.address,
                    "--app-dir",
                    str(source_root()),
                    "--min-clients",
                    str(settings.min_clients),
                    "--overrides",
                    json.dumps(settings.overrides),
                ],
                self.controller_log,
                env,
            )
            write_pid(self.controller_pid, ctl.pid)
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
