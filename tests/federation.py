"""A federation on loopback for tests: one SuperLink, N SuperNodes, runs submitted with ``flwr run``.

Every process is stopped by pid (with its descendants) on exit, even when the test fails.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zk0.deploy import flower
from zk0.deploy.process import free_port, spawn, stop_tree, wait_for_port
from zk0.deploy.server import process_env
from zk0.paths import server_dir

HOST = "127.0.0.1"
CONNECTION = "zk0-local"


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
        return {**process_env(self.home / "state", self.home / "flwr"), **self.env}

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
        link = spawn(
            flower.superlink(host=HOST, port=port, database=self.home / "superlink.db"),
            self.logs / "superlink.log",
            env,
        )
        self.pids.append(link.pid)
        wait_for_port(HOST, port, timeout=60, proc=link)
        for i, settings in enumerate(self.nodes):
            node = spawn(
                flower.supernode(superlink_address=self.address, port=free_port(HOST), settings=settings),
                self.logs / f"supernode-{i}.log",
                env,
            )
            self.pids.append(node.pid)
        flwr_home = Path(env["FLWR_HOME"])
        flwr_home.mkdir(parents=True, exist_ok=True)
        # `flwr run . zk0-local` finds this SuperLink through Flower's config file.
        (flwr_home / "config.toml").write_text(
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\ninsecure = true\n'
        )

    def run(self, app_dir: Path, run_config: Mapping[str, Any], timeout: float) -> None:
        """Submit the app with ``flwr run --stream`` and wait for the run to end."""
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        cmd = [flower.executable("flwr"), "run", str(app_dir), CONNECTION, "--stream", "--run-config", overrides]
        with open(self.logs / "run.log", "wb") as log:
            done = subprocess.run(
                cmd, env=self._env(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        assert done.returncode == 0, f"flwr run failed (exit {done.returncode}); see {self.logs / 'run.log'}"

    def stop(self) -> None:
        """Stop every process this federation started, newest first."""
        while self.pids:
            stop_tree(self.pids.pop())
