"""Where zk0 keeps its state: ``$ZK0_HOME``, else ``$XDG_STATE_HOME/zk0``, else ``~/.local/state/zk0``."""

from __future__ import annotations

import os
from pathlib import Path

from zk0.errors import RuntimeFailure

ENV_HOME = "ZK0_HOME"


def state_dir() -> Path:
    """The state directory; Flower's app processes inherit ``ZK0_HOME`` from the SuperLink."""
    if home := os.environ.get(ENV_HOME):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(xdg) / "zk0"


def server_dir(home: Path | None = None) -> Path:
    """Global checkpoints and round history of the server whose state dir is ``home`` (default: this one)."""
    return (home or state_dir()) / "server"


def app_pyproject() -> Path:
    """zk0's pyproject.toml: the Flower app's settings and defaults, and what the app bundle (FAB) is built from.

    A source checkout has it at its root; an installed wheel carries a copy inside the package.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package.parents[1] / "pyproject.toml", package / "pyproject.toml"):
        if candidate.is_file():
            return candidate
    raise RuntimeFailure(f"zk0's pyproject.toml is missing from {package}; reinstall zk0")
