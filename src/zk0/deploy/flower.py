"""Command lines for Flower's executables, from the same environment as zk0."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from zk0.deploy.tls import ServerTls


def executable(name: str) -> str:
    """Path of a Flower executable installed beside the running Python, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"'{name}' not found; is flwr installed in this environment?")
    return found


def node_config(values: Mapping[str, str | int | float]) -> str:
    """Render ``--node-config``: strings quoted, numbers bare."""

    def render(v: str | int | float) -> str:
        if isinstance(v, str):
            if "'" in v:
                raise ValueError(f"node setting value {v!r} must not contain a single quote")
            return f"'{v}'"
        return str(v)

    return " ".join(f"{k}={render(v)}" for k, v in values.items())


def superlink(*, host: str, port: int, database: Path, tls: ServerTls | None = None) -> list[str]:
    """A SuperLink that runs the ServerApp in the zk0 environment (no per-run ``uv sync``).

    With ``tls`` it serves TLS and admits only SuperNodes whose public key was registered.
    """
    cmd = [
        executable("flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(database),
        "--disable-runtime-dependency-installation",
    ]
    if tls is None:
        return [*cmd, "--insecure"]
    return [
        *cmd,
        "--ssl-ca-certfile",
        str(tls.ca_cert),
        "--ssl-certfile",
        str(tls.cert),
        "--ssl-keyfile",
        str(tls.key),
        "--enable-supernode-auth",
    ]


def supernode(
    *,
    superlink_address: str,
    port: int,
    settings: Mapping[str, str | int | float],
    ca_cert: Path | None = None,
    key: Path | None = None,
) -> list[str]:
    """A SuperNode with its own port and node settings (dataset-uri, camera-map, ...).

    With ``ca_cert`` it talks TLS to the SuperLink and signs in with its private ``key``.
    """
    cmd = [
        executable("flower-supernode"),
        "--superlink",
        superlink_address,
        "--port",
        str(port),
        "--node-config",
        node_config(settings),
    ]
    if ca_cert is None or key is None:
        return [*cmd, "--insecure"]
    return [*cmd, "--root-certificates", str(ca_cert), "--auth-supernode-private-key", str(key)]
