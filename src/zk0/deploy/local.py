"""A whole federation on loopback: one SuperLink and N SuperNodes as real processes.

Used by ``zk0bot demo`` and the end-to-end tests. Every process is started in
its own process group and stopped by pid on exit, even when the body fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zk0 import checkpoints
from zk0.deploy import flower
from zk0.deploy.process import free_port, spawn, stop_tree, wait_for_port
from zk0.paths import ENV_HOME, server_dir

HOST = "127.0.0.1"
CONNECTION = "zk0-local"


class RunFailed(RuntimeError):
    """``flwr run`` did not finish the run."""


@dataclass
class LocalFederation:
    """SuperLink + SuperNodes under ``home`` (logs, Flower state, zk0 state)."""

    home: Path
    nodes: Sequence[Mapping[str, str | int | float]]
    env: Mapping[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    address: str = ""

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def server_dir(self) -> Path:
        """The server's checkpoints and history."""
        return server_dir(self.home / "state")

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, ENV_HOME: str(self.home / "state"), "FLWR_HOME": str(self.home / "flwr")}
        # The SuperLink and SuperNodes start flower-superexec by name.
        env["PATH"] = os.pathsep.join([str(Path(flower.executable("flwr")).parent), env.get("PATH", "")])
        env.setdefault("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))
        return env

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        env = self._env()
        port = free_port(HOST)
        self.address = f"{HOST}:{port}"
        link = spawn(flower.superlink(host=HOST, port=port, database=self.home / "superlink.db"),
                     self.logs / "superlink.log", env)
        self.pids.append(link.pid)
        wait_for_port(HOST, port, timeout=60, proc=link)
        for i, settings in enumerate(self.nodes):
            node = spawn(flower.supernode(superlink_address=self.address, port=free_port(HOST), settings=settings),
                         self.logs / f"supernode-{i}.log", env)
            self.pids.append(node.pid)
        flwr_home = Path(env["FLWR_HOME"])
        flwr_home.mkdir(parents=True, exist_ok=True)
        (flwr_home / "config.toml").write_text(flower.connection_toml(CONNECTION, self.address))

    def run(self, app_dir: Path, run_config: Mapping[str, Any], timeout: float,
            on_round: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Submit the app with ``flwr run --stream``, call ``on_round`` per history line, wait for the end."""
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        cmd = [flower.executable("flwr"), "run", str(app_dir), CONNECTION, "--stream", "--run-config", overrides]
        history = self.server_dir
        seen = len(checkpoints.read_history(history))
        deadline = time.monotonic() + timeout
        with open(self.logs / "run.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise RunFailed(f"the run did not finish within {timeout:.0f} s; logs in {self.logs}")
                    lines = checkpoints.read_history(history)
                    for line in lines[seen:]:
                        if on_round is not None:
                            on_round(line)
                    seen = max(seen, len(lines))
                    time.sleep(1.0)
            finally:
                if proc.poll() is None:
                    stop_tree(proc.pid)
        if proc.returncode != 0:
            raise RunFailed(f"flwr run failed (exit {proc.returncode}); see {self.logs / 'run.log'}")
        for line in checkpoints.read_history(history)[seen:]:
            if on_round is not None:
                on_round(line)

    def stop(self) -> None:
        """Stop every process this federation started, newest first."""
        while self.pids:
            stop_tree(self.pids.pop())
