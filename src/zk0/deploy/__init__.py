"""Process supervision for zk0bot: Flower's SuperLink and SuperNodes as real processes."""

from __future__ import annotations

from pathlib import Path

from zk0.errors import DeployError

__all__ = ["DeployError", "ensure_writable"]


def ensure_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove it is writable, or raise DeployError."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise DeployError(
            f"state dir {directory} is not writable ({err.strerror}); pass --state-dir or set ZK0_HOME"
        ) from None
