"""Command lines for Flower's executables, from the same environment as zk0."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path


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


def superlink(*, host: str, port: int, database: Path, insecure: bool = True) -> list[str]:
    """A SuperLink that runs the ServerApp in the zk0 environment (no per-run ``uv sync``)."""
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
    return cmd + (["--insecure"] if insecure else [])


def supernode(
    *, superlink_address: str, port: int, settings: Mapping[str, str | int | float], insecure: bool = True
) -> list[str]:
    """A SuperNode with its own port and node settings (dataset-uri, camera-map, ...)."""
    cmd = [
        executable("flower-supernode"),
        "--superlink",
        superlink_address,
        "--port",
        str(port),
        "--node-config",
        node_config(settings),
    ]
    return cmd + (["--insecure"] if insecure else [])
