"""Atomic, crash-safe files for the global model and the round history.

Every write goes to a temporary file in the same directory, is fsynced and
then renamed over the target, so a crash mid-write leaves the previous good
file in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0.errors import PolicyError

if TYPE_CHECKING:
    import torch

GLOBAL_FILE = "global.safetensors"
HISTORY_FILE = "history.jsonl"
KEY_FILE = "federation.key"
# Per-round LeRobot-loadable checkpoints: checkpoints/round-00005/, and checkpoints/latest -> the newest.
ROUNDS_DIR = "checkpoints"
LATEST = "latest"


@contextmanager
def _atomic(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_global(directory: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write the global trainable parameters (float32) with string metadata."""
    from safetensors.torch import save_file

    path = directory / GLOBAL_FILE
    with _atomic(path) as tmp:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={k: str(v) for k, v in metadata.items()}
        )
    return path


def read_metadata(directory: Path) -> dict[str, str]:
    """The metadata :func:`save_global` wrote, without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(directory / GLOBAL_FILE), framework="pt") as f:
        return dict(f.metadata() or {})


def load_global(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read what :func:`save_global` wrote: tensors and metadata."""
    from safetensors import safe_open

    with safe_open(str(directory / GLOBAL_FILE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def federation_key(directory: Path) -> bytes:
    """The federation's secret for keyed dataset tags: 32 random bytes, made once (mode 0600)."""
    import secrets

    path = directory / KEY_FILE
    if not path.exists():
        with _atomic(path) as tmp:  # mkstemp makes the file 0600
            tmp.write_text(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def verify(directory: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Raise PolicyError if the tensors do not hash to the digest saved with them."""
    if "digest" not in metadata:
        return
    from zk0.integrity import digest
    from zk0.policy import to_arrays

    if digest(to_arrays(tensors, "float32")) != metadata["digest"]:
        raise PolicyError(
            f"the checkpoint in {directory / GLOBAL_FILE} does not match its recorded digest; "
            "it was altered or damaged: restore it from a backup or move it away to start over"
        )


def saved_round(rnd: int, every: int, *, final: bool) -> bool:
    """Whether round ``rnd`` gets a LeRobot-loadable checkpoint: every ``every`` rounds (0: never) and the final one."""
    return final or (every > 0 and rnd % every == 0)


def round_dir(directory: Path, rnd: int) -> Path:
    """Where round ``rnd``'s LeRobot-loadable checkpoint lives."""
    return directory / ROUNDS_DIR / f"round-{rnd:05d}"


def saved_rounds(directory: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("round-")) for p in (directory / ROUNDS_DIR).glob("round-*[0-9]"))


def point_latest(directory: Path, rnd: int) -> None:
    """Make ``checkpoints/latest`` point at round ``rnd``'s directory, atomically (symlink, then rename)."""
    link = directory / ROUNDS_DIR / LATEST
    tmp = link.with_name(f".{LATEST}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(round_dir(directory, rnd).name, tmp)
    os.replace(tmp, link)


def append_history(directory: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync it."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / HISTORY_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_history(directory: Path) -> list[dict[str, Any]]:
    path = directory / HISTORY_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resume(
    directory: Path, fresh: Mapping[str, torch.Tensor], num_rounds: int
) -> tuple[Mapping[str, torch.Tensor], int, int]:
    """The global parameters a new session starts from, rounds done, and the round to reach.

    Without a checkpoint that is ``fresh`` from round 0; with one, the saved
    parameters, which must have the names and shapes of ``fresh``.
    """
    if not (directory / GLOBAL_FILE).exists():
        return fresh, 0, num_rounds
    tensors, metadata = load_global(directory)
    verify(directory, tensors, metadata)
    if {k: tuple(v.shape) for k, v in tensors.items()} != {k: tuple(v.shape) for k, v in fresh.items()}:
        raise PolicyError(
            f"the checkpoint in {directory} does not fit this model's trainable parameters; "
            "use a new --state-dir for a new model, or move the old checkpoint away"
        )
    return (tensors, *plan_session(metadata, num_rounds))


def plan_session(metadata: Mapping[str, str] | None, num_rounds: int) -> tuple[int, int]:
    """(rounds already done, round to reach) for a new session.

    A session that stopped before its target (a crash, a stop) is finished
    first; otherwise the new session adds ``num_rounds`` rounds to what the
    federation has trained so far. Rounds are counted across sessions.
    """
    if not metadata:
        return 0, num_rounds
    done, target = int(metadata["round"]), int(metadata.get("target", metadata["round"]))
    return (done, target) if done < target else (done, done + num_rounds)
