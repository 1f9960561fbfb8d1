"""A LeRobot policy directory from a global checkpoint, for use on a robot.

A federated model has no global normalisation stats, so the operator's own
recordings supply them; the robot's camera names are mapped onto the model's
``camera1..N`` inside the saved preprocessor. The directory loads with
LeRobot alone: ``SmolVLAPolicy.from_pretrained(DIR)`` and
``make_pre_post_processors(policy.config, pretrained_path=DIR)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0 import checkpoints
from zk0.config import RunConfig
from zk0.datasets import DatasetSource, camera_map, check_so100, normalisation_stats
from zk0.errors import PolicyError, UserError

if TYPE_CHECKING:
    import torch

LATEST = checkpoints.LATEST


class ExportError(UserError):
    """The checkpoint or round asked for does not exist, or the output directory is taken."""


@dataclass(frozen=True)
class Checkpoint:
    """A global model as the server saved it: its round, run settings and trainable tensors."""

    round: int
    cfg: RunConfig
    tensors: dict[str, torch.Tensor]


def find_checkpoint(server: Path, which: str) -> Checkpoint:
    """The checkpoint of round ``which`` (a number or 'latest') in the server dir ``server``.

    'latest' is the server's newest global model (saved every round); a
    number is one of the rounds saved every ``checkpoint-every`` rounds.
    """
    if which != LATEST and not which.isdigit():
        raise ExportError(f"ROUND must be a round number or '{LATEST}', got {which!r}")
    directory = server if which == LATEST else checkpoints.round_dir(server, int(which))
    if not (server / checkpoints.GLOBAL_FILE).is_file():
        raise ExportError(f"no global checkpoint in {server}; train a round first, or pass the server's --state-dir")
    if not (directory / checkpoints.GLOBAL_FILE).is_file():
        saved = ", ".join(str(r) for r in checkpoints.saved_rounds(server)) or "none"
        latest = checkpoints.read_metadata(server).get("round", "?")
        raise ExportError(
            f"round {which} has no checkpoint in {server}; saved rounds: {saved}; '{LATEST}' is round {latest}"
        )
    tensors, metadata = checkpoints.load_global(directory)
    if "run-config" not in metadata or "round" not in metadata:
        raise ExportError(f"the checkpoint in {directory} has no run settings (saved by an older zk0); train a round")
    try:
        checkpoints.verify(directory, tensors, metadata)
    except PolicyError as err:
        raise ExportError(str(err)) from None
    return Checkpoint(int(metadata["round"]), RunConfig.from_run_config(json.loads(metadata["run-config"])), tensors)


def dataset_stats(cfg: RunConfig, uri: str, spec: str = "") -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """State/action stats of the dataset at ``uri`` and its camera map onto the model's cameras."""
    meta = DatasetSource.parse(uri).metadata()
    cameras = check_so100(meta, state_dim=cfg.state_dim, action_dim=cfg.action_dim)
    return normalisation_stats(meta), camera_map(cameras, cfg.camera_features, spec)


def check_out(out: Path) -> None:
    """Refuse an output path that holds anything already."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not empty; name a new directory")


def save_policy_dir(
    cfg: RunConfig,
    trainable: Mapping[str, torch.Tensor],
    out: Path,
    stats: dict[str, dict[str, Any]] | None,
    rename_map: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write SmolVLA with ``trainable`` loaded, plus pre/post processors with ``stats``, to ``out``.

    ``rename_map`` (dataset camera key → model camera key) is applied by the
    saved preprocessor. With ``metadata`` the trainable tensors are saved
    beside, as zk0's own checkpoint file (what ``find_checkpoint`` reads).
    Everything is written to a temp dir beside ``out`` and renamed at the end,
    so ``out`` is complete or absent.
    """
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.processor.rename_processor import RenameObservationsProcessorStep

    from zk0.policy import build_policy, load_trainable

    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        policy = build_policy(cfg)
        try:
            load_trainable(policy, trainable)
        except PolicyError as err:
            raise ExportError(f"the checkpoint does not fit the model its run settings build: {err}") from None
        pre, post = make_pre_post_processors(policy.config, dataset_stats=stats)
        if rename_map:
            rename = next(s for s in pre.steps if isinstance(s, RenameObservationsProcessorStep))
            rename.rename_map = dict(rename_map)
        policy.save_pretrained(tmp)
        pre.save_pretrained(tmp)
        post.save_pretrained(tmp)
        if metadata is not None:
            checkpoints.save_global(tmp, trainable, metadata)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; give it the mode mkdir would
        try:
            os.replace(tmp, out)  # replaces an empty directory, refuses a non-empty one
        except OSError as err:
            raise ExportError(f"cannot move the export into {out}: {err.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def export(server: Path, which: str, out: Path, dataset_uri: str, camera_spec: str = "") -> tuple[int, dict[str, str]]:
    """``zk0bot export``: round ``which`` of the server dir ``server`` as a policy dir ``out``, with the
    stats and cameras of ``dataset_uri``. Returns the round exported and the camera map applied.
    """
    check_out(out)
    checkpoint = find_checkpoint(server, which)
    stats, cameras = dataset_stats(checkpoint.cfg, dataset_uri, camera_spec)
    save_policy_dir(checkpoint.cfg, checkpoint.tensors, out, stats, rename_map=cameras)
    return checkpoint.round, cameras


def try_policy(directory: Path, dataset_uri: str) -> tuple[int, ...]:
    """Load an exported policy with LeRobot alone and predict an action chunk for the dataset's first frame.

    Returns the chunk's shape: (1, chunk-size, action-dim). What a robot owner
    runs before trusting a download.
    """
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    source = DatasetSource.parse(dataset_uri)
    policy = SmolVLAPolicy.from_pretrained(directory)
    pre, _ = make_pre_post_processors(policy.config, pretrained_path=str(directory))
    frame = LeRobotDataset(source.repo_id, root=source.path, revision=source.revision, episodes=[0])[0]
    observation = {k: v for k, v in frame.items() if k.startswith("observation.")} | {"task": frame["task"]}
    with torch.no_grad():
        return tuple(policy.predict_action_chunk(pre(observation)).shape)
