"""A node's private dataset: where it is, whether it fits SO-100, how it is split and fed.

URIs name the source: ``hf:owner/name[@revision]`` (the token, if any, comes
from ``HF_TOKEN`` in the environment, never from config) or ``local:/abs/path``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zk0.errors import DatasetError

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

STATE = "observation.state"
ACTION = "action"
IMAGE_PREFIX = "observation.images."


@dataclass(frozen=True)
class DatasetSource:
    """Where a node's dataset lives; built by :meth:`parse`."""

    scheme: Literal["hf", "local"]
    # owner/name for hf:, a synthetic "local/<dirname>" for local:
    repo_id: str
    revision: str | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, uri: str) -> DatasetSource:
        """Parse ``hf:owner/name[@rev]`` or ``local:/abs/path``."""
        scheme, sep, rest = uri.strip().partition(":")
        if not sep or not rest:
            raise DatasetError(f"dataset URI {uri!r} must be 'hf:owner/name[@revision]' or 'local:/abs/path'")
        if scheme == "hf":
            repo_id, _, revision = rest.partition("@")
            owner, slash, name = repo_id.partition("/")
            if not (owner and slash and name) or "/" in name:
                raise DatasetError(
                    f"dataset URI {uri!r}: expected 'hf:owner/name', e.g. 'hf:lerobot/svla_so100_pickplace'"
                )
            if "@" in rest and not revision:
                raise DatasetError(f"dataset URI {uri!r}: empty revision after '@'")
            return cls("hf", repo_id, revision or None)
        if scheme == "local":
            path = Path(rest).expanduser()
            if not path.is_absolute():
                raise DatasetError(f"dataset URI {uri!r}: local path must be absolute, e.g. 'local:/data/my_so100'")
            return cls("local", f"local/{path.name}", None, path)
        raise DatasetError(f"dataset URI {uri!r}: unknown scheme {scheme!r}; use 'hf:' or 'local:'")

    def _root(self) -> Path | None:
        if self.path is None:
            return None
        if not (self.path / "meta" / "info.json").exists():
            # Checked here so LeRobot does not fall back to the hub for a local dir.
            reason = "does not exist" if not self.path.exists() else "is not a LeRobot dataset (no meta/info.json)"
            raise DatasetError(f"dataset {self.path} {reason}")
        return self.path

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"hf:{self.repo_id}"

    def metadata(self) -> LeRobotDatasetMetadata:
        """Open the dataset's metadata (downloads only ``meta/`` for hf:); DatasetError if it cannot be read."""
        from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

        root = self._root()
        # The datasets library logs its own error line before raising; ours says it in one line.
        quiet, level = logging.getLogger("datasets"), logging.getLogger("datasets").level
        quiet.setLevel(logging.CRITICAL)
        try:
            return LeRobotDatasetMetadata(self.repo_id, root=root, revision=self.revision)
        except (OSError, ValueError, KeyError) as err:  # unreadable, corrupt JSON or parquet, hub errors
            raise DatasetError(f"dataset {self.name}: cannot read its metadata ({_reason(err)})") from None
        finally:
            quiet.setLevel(level)

    def check_files(self, meta: LeRobotDatasetMetadata) -> None:
        """For a local dataset, read every data file's parquet footer and match the frame count.

        A truncated or corrupt file is found here, before training, not in the
        middle of a round. (hf: datasets are checked by the hub's own hashes.)
        """
        if self.path is None:
            return
        import pyarrow.parquet as pq

        frames = 0
        for file in sorted((self.path / "data").rglob("*.parquet")):
            try:
                frames += pq.ParquetFile(file).metadata.num_rows
            except (OSError, ValueError) as err:
                raise DatasetError(f"dataset {self.name}: cannot read {file} ({_reason(err)})") from None
        if frames != meta.total_frames:
            raise DatasetError(
                f"dataset {self.name}: its data files hold {frames} frames, meta/info.json says {meta.total_frames}"
            )

    def open(self, episodes: Sequence[int], delta_timestamps: Mapping[str, list[float]] | None) -> LeRobotDataset:
        """Open the given episodes as a torch dataset."""
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        return LeRobotDataset(
            self.repo_id,
            root=self._root(),
            revision=self.revision,
            episodes=list(episodes),
            delta_timestamps=dict(delta_timestamps) if delta_timestamps else None,
        )


def episode_digests(dataset: LeRobotDataset) -> list[bytes]:
    """SHA-256 of each episode's recorded states and actions (float32 bytes, in frame order)."""
    import hashlib

    import numpy as np

    columns = dataset.hf_dataset.with_format("numpy", columns=["episode_index", STATE, ACTION])[:]
    out = []
    for episode in np.unique(columns["episode_index"]):
        rows = columns["episode_index"] == episode
        h = hashlib.sha256()
        for key in (STATE, ACTION):
            h.update(np.ascontiguousarray(columns[key][rows], dtype=np.float32).tobytes())
        out.append(h.digest())
    return out


def _reason(err: BaseException) -> str:
    """The first line of an error, without a traceback."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text.splitlines()[0]


def check_so100(meta: LeRobotDatasetMetadata, *, state_dim: int, action_dim: int) -> list[str]:
    """Check the features an SO-100 policy needs; return the dataset's camera keys (sorted)."""
    features = meta.features
    for key, dim in ((STATE, state_dim), (ACTION, action_dim)):
        if key not in features:
            raise DatasetError(f"dataset {meta.repo_id} has no '{key}' feature; an SO-100 dataset needs one")
        shape = tuple(features[key]["shape"])
        if shape != (dim,):
            raise DatasetError(f"dataset {meta.repo_id}: '{key}' has shape {shape}, expected ({dim},)")
    cameras = sorted(meta.camera_keys)
    if not cameras:
        raise DatasetError(f"dataset {meta.repo_id} has no camera (observation.images.*) feature")
    if meta.total_episodes < 1:
        raise DatasetError(f"dataset {meta.repo_id} has no episodes")
    return cameras


def split_episodes(num_episodes: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split episode indices into (train, held-out), the same way on every call.

    At least one episode is held out when ``eval_fraction > 0`` and at least one
    stays for training; a single-episode dataset trains and holds out nothing.
    """
    order = list(range(num_episodes))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if eval_fraction > 0 and num_episodes > 1:
        n_eval = min(num_episodes - 1, max(1, round(num_episodes * eval_fraction)))
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def camera_map(dataset_cameras: Sequence[str], model_cameras: Sequence[str], spec: str = "") -> dict[str, str]:
    """Map dataset camera keys onto the model's image features.

    ``spec`` is "front=camera1,wrist=camera2" (short names or full keys); empty
    maps the dataset's cameras in sorted order onto camera1, camera2, ...
    """
    short = {key.removeprefix(IMAGE_PREFIX): key for key in dataset_cameras}
    model_short = {key.removeprefix(IMAGE_PREFIX): key for key in model_cameras}
    if not spec.strip():
        if len(dataset_cameras) > len(model_cameras):
            raise DatasetError(
                f"dataset has {len(dataset_cameras)} cameras ({', '.join(sorted(short))}) but the model takes "
                f"{len(model_cameras)}; choose some with camera-map, e.g. '{sorted(short)[0]}=camera1'"
            )
        return dict(zip(sorted(dataset_cameras), model_cameras, strict=False))
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        src, eq, dst = (part.strip() for part in item.partition("="))
        src_key = short.get(src.removeprefix(IMAGE_PREFIX))
        dst_key = model_short.get(dst.removeprefix(IMAGE_PREFIX))
        if not eq or src_key is None or dst_key is None:
            raise DatasetError(
                f"camera-map entry {item.strip()!r} must be 'datasetcam=modelcam' with datasetcam in "
                f"{sorted(short)} and modelcam in {sorted(model_short)}"
            )
        if dst_key in mapping.values():
            raise DatasetError(f"camera-map maps two cameras onto {dst!r}")
        mapping[src_key] = dst_key
    return mapping


def rename_cameras(batch: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Rename mapped camera keys; drop cameras the map leaves out (and their masks)."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        base = key.removesuffix("_is_pad")
        if base.startswith(IMAGE_PREFIX):
            if base in mapping:
                out[mapping[base] + key[len(base) :]] = value
            continue
        out[key] = value
    return out


def normalisation_stats(meta: LeRobotDatasetMetadata) -> dict[str, dict[str, Any]]:
    """This node's state/action statistics; they stay on the node (images use no stats)."""
    return {key: meta.stats[key] for key in (STATE, ACTION)}
