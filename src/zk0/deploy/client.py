"""A robot node: its dataset checked up front, then a SuperNode, supervised by pid files.

Each client lives in ``<state>/clients/<name>/`` (pid, log, ``client.json``,
Flower's home). The dataset URI goes to the SuperNode's node config only; the
token for hf: datasets stays in the environment (``HF_TOKEN``/``HF_TOKEN_PATH``).
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from zk0.datasets import DatasetSource, check_so100
from zk0.deploy import DeployError, ensure_writable, flower, tls, warm
from zk0.deploy.process import free_port, live_pid, spawn, stop_tree, write_pid
from zk0.deploy.server import process_env

# Fewer episodes than this make a weak contribution; the check warns.
FEW_EPISODES = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ClientInfo:
    name: str
    dataset_uri: str
    server: str
    port: int
    episodes: int
    cameras: list[str]
    tls: bool = False


@dataclass(frozen=True)
class DatasetReport:
    episodes: int
    frames: int
    cameras: list[str]
    warnings: list[str]


def check_dataset(uri: str, *, state_dim: int = 6, action_dim: int = 6) -> DatasetReport:
    """Reach the dataset and check it can train an SO-100 policy (raises DatasetError)."""
    source = DatasetSource.parse(uri)
    meta = source.metadata()
    cameras = check_so100(meta, state_dim=state_dim, action_dim=action_dim)
    source.check_files(meta)
    warnings = []
    if meta.total_episodes < FEW_EPISODES:
        warnings.append(
            f"only {meta.total_episodes} episodes (under {FEW_EPISODES}): this node's updates will be noisy"
        )
    return DatasetReport(meta.total_episodes, meta.total_frames, cameras, warnings)


def default_name(uri: str) -> str:
    """A client name from the dataset's name: 'hf:me/so100_pick' -> 'so100_pick'."""
    tail = re.split(r"[/:@]", DatasetSource.parse(uri).repo_id)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "-", tail)[:64] or "client"


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise DeployError(f"{what} name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")


def _reachable(address: str, timeout: float = 3.0) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DeployError(f"server address {address!r} must be HOST:PORT, e.g. 127.0.0.1:8000")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise DeployError(
            f"server {address} is unreachable ({err.strerror or err}); is 'zk0bot server start' running there?"
        ) from None


class Clients:
    """Start, stop and list the clients of this host under ``state/clients``."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.root = state / "clients"

    def dir(self, name: str) -> Path:
        return self.root / name

    def pid_file(self, name: str) -> Path:
        return self.dir(name) / "supernode.pid"

    def log_file(self, name: str) -> Path:
        return self.dir(name) / "supernode.log"

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/client.json"))

    def info(self, name: str) -> ClientInfo:
        path = self.dir(name) / "client.json"
        if not path.exists():
            known = ", ".join(self.names()) or "none"
            raise DeployError(f"no client named {name!r} on this host (known: {known}); see 'zk0bot status'")
        return ClientInfo(**json.loads(path.read_text()))

    def pid(self, name: str) -> int | None:
        return live_pid(self.pid_file(name))

    def key_file(self, name: str) -> Path:
        return self.state / "keys" / name

    def keygen(self, name: str) -> Path:
        """A node key pair under ``<state>/keys``; returns the public key's path."""
        _check_name(name, "key")
        ensure_writable(self.key_file(name).parent)
        return tls.keygen(self.key_file(name))

    def start(
        self,
        uri: str,
        *,
        server: str,
        name: str | None = None,
        camera_map: str = "",
        device: str = "auto",
        num_workers: int = 2,
        threads: int = 0,
        report: DatasetReport | None = None,
        ca_cert: Path | None = None,
        key: Path | None = None,
    ) -> ClientInfo:
        """Start a SuperNode for a checked dataset; refuses a name that is already running.

        With ``ca_cert`` (the server's CA) and ``key`` (this node's private key,
        allowed on the server) it connects with TLS and authenticates.
        """
        name = name or default_name(uri)
        _check_name(name, "client")
        if self.pid(name) is not None:
            raise DeployError(
                f"client {name!r} is already running; stop it with 'zk0bot client stop {name}' or pick --name"
            )
        if (ca_cert is None) != (key is None):
            raise DeployError(
                "--ca-cert and --key go together: a TLS server admits only nodes whose key it allowed "
                "(make one with 'zk0bot client keygen')"
            )
        if ca_cert is not None and key is not None:
            ca_cert, key = ca_cert.resolve(), key.resolve()
            tls.check_ca_cert(ca_cert)
            tls.check_private_key(key)
        _reachable(server)
        report = report or check_dataset(uri)
        ensure_writable(self.dir(name))
        port = free_port()
        settings = {"dataset-uri": uri, "device": device, "num-workers": num_workers, "threads": threads}
        if camera_map:
            settings["camera-map"] = camera_map
        env = process_env(self.state, self.dir(name) / "flwr")
        cmd = flower.supernode(superlink_address=server, port=port, settings=settings, ca_cert=ca_cert, key=key)
        node = spawn(warm.launcher(cmd), self.log_file(name), env)
        write_pid(self.pid_file(name), node.pid)
        info = ClientInfo(name, uri, server, port, report.episodes, report.cameras, tls=ca_cert is not None)
        (self.dir(name) / "client.json").write_text(json.dumps(asdict(info)))
        return info

    def wait(self, name: str) -> None:
        """Block while the client's SuperNode runs (``--foreground``)."""
        while self.pid(name) is not None:
            time.sleep(1.0)

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        """Stop one client's SuperNode (whole process tree); returns its pid if it was running."""
        self.info(name)
        pid = self.pid(name)
        if pid is not None:
            stop_tree(pid, timeout)
        self.pid_file(name).unlink(missing_ok=True)
        return pid
