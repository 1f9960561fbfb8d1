"""Offline kit: a tiny SmolVLM backbone and synthetic SO-100 datasets, built locally.

Everything here is made on the machine, deterministically, with no call to the Hugging Face hub,
so that SmolVLA training, federation and their tests run offline and in seconds on a CPU:

- :func:`build_backbone` writes a tiny SmolVLM-style directory (config, byte-level BPE tokenizer,
  processor) that ``SmolVLAConfig(vlm_model_name=DIR, load_vlm_weights=False)`` accepts.
- :func:`make_so100_dataset` records a small synthetic SO-100 dataset with LeRobot's own writer.
- :func:`build_kit` builds one backbone plus one dataset per simulated client in a cache directory.

Every builder writes into a temporary sibling directory and renames it into place at the end, so
an interrupted build leaves nothing half-written, and a second call reuses what is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# ---- Backbone -------------------------------------------------------------------------------

BACKBONE_MARKER = "zk0-backbone.json"
"""Written last into a backbone directory; its presence (with matching hashes) means complete."""

BACKBONE_VERSION = 1
"""Bumped whenever the backbone's contents change; an older backbone is rebuilt."""

# Text model (Llama-style, like SmolVLM2's SmolLM2). SmolVLA keeps the first `num_vlm_layers`
# layers and builds its action expert as a copy of this config at 0.75 of the width.
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
}
# Vision model (SigLIP-style). SmolVLA pads images to `resize_imgs_with_padding`; matching
# `image_size` to it (64) gives (64 / 8) ** 2 = 64 patches, pixel-shuffled by `scale_factor` 2 into
# 16 tokens per camera.
_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 64,
    "patch_size": 8,
}
_SCALE_FACTOR = 2
_TOKENIZER_VOCAB_SIZE = 512  # an upper bound: a small corpus yields fewer merges

# SmolVLM2's special tokens. SmolVLA reads `tokenizer.fake_image_token_id` and
# `tokenizer.global_image_token_id`; the processor reads `image_token` (and `end_of_utterance_token`).
# Row/column tokens are only used when the image processor splits images; kept for fidelity.
_UNK, _BOS, _PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
_IMAGE_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
_ROW_COL_TOKENS = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))

# ---- Datasets -------------------------------------------------------------------------------

SO100_JOINTS = (
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
)
"""Joint names of the SO-100 follower arm, in LeRobot's order (degrees; gripper in 0-100)."""

TASKS = (
    "pick up the red cube and place it in the bin",
    "push the green block to the left",
    "grasp the blue cup and lift it",
    "stack the yellow cube on the red cube",
    "open the drawer and put the pen inside",
)
"""Task sentences of the synthetic episodes; the backbone's tokenizer is trained on them."""

# Centre and amplitude of each joint's sine, roughly inside the SO-100's range of motion.
_JOINT_CENTRE = np.array([0.0, 20.0, -30.0, 40.0, 0.0, 30.0], dtype=np.float32)
_JOINT_AMPLITUDE = np.array([30.0, 25.0, 25.0, 20.0, 45.0, 25.0], dtype=np.float32)
_JOINT_FREQUENCY_HZ = np.array([0.25, 0.35, 0.3, 0.5, 0.4, 0.6], dtype=np.float32)

# Per-client variety in build_kit: camera names and (height, width), cycled over clients.
_CLIENT_CAMERAS = (("front", "wrist"), ("laptop", "phone"), ("top", "wrist"), ("front", "side"))
_CLIENT_IMAGE_SHAPES = ((48, 64), (64, 48))


@dataclass(frozen=True)
class OfflineKit:
    """What :func:`build_kit` made: a backbone directory and one dataset root per client."""

    backbone: Path
    """Directory to pass as ``SmolVLAConfig.vlm_model_name``."""
    datasets: tuple[Path, ...]
    """Dataset roots, one per client; load with ``LeRobotDataset(dataset_repo_id(root), root=root)``."""


def build_backbone(directory: Path) -> Path:
    """Build a tiny SmolVLM-style backbone in ``directory`` (or reuse a complete one) and return it.

    The directory holds ``config.json`` (a :class:`transformers.SmolVLMConfig`), a byte-level BPE
    tokenizer trained on :data:`TASKS` with SmolVLM2's special tokens, and a ``SmolVLMProcessor``
    configuration, all byte-identical from build to build. The marker file is written last.

    Raises:
        ValueError: ``directory`` exists, is not empty and is not a backbone made here.
    """
    directory = Path(directory)
    if _backbone_is_complete(directory):
        return directory
    stale = directory.is_dir() and (directory / BACKBONE_MARKER).is_file()
    if directory.exists() and not stale and (not directory.is_dir() or any(directory.iterdir())):
        raise ValueError(
            f"{directory} is not empty and holds no {BACKBONE_MARKER}: it is not a zk0 backbone. "
            "Pass an empty or missing directory, or delete this one."
        )
    logger.info("Building the tiny SmolVLM backbone in %s", directory)
    return _publish(directory, _write_backbone, is_complete=_backbone_is_complete, replace=stale)


def make_so100_dataset(
    root: Path,
    repo_id: str,
    *,
    cameras: Sequence[str] = ("front", "wrist"),
    episodes: int = 4,
    frames_per_episode: int = 20,
    image_shape: tuple[int, int] = (48, 64),
    fps: int = 30,
    seed: int = 0,
    robot_type: str = "so100_follower",
) -> Path:
    """Record a synthetic SO-100 dataset at ``root`` with LeRobot's writer and return ``root``.

    Each episode follows smooth sine trajectories of the six joints, with phases drawn from
    ``seed``; the action of a frame is the next frame's state. Each camera sees a smooth gradient
    with a soft blob whose position and colour follow the joints, stored as PNG images (no video).
    Each episode gets one task sentence from :data:`TASKS`. The same arguments give the same data.

    Args:
        root: Dataset directory; must be missing or empty.
        repo_id: LeRobot repository id recorded with the dataset (nothing is uploaded).
        cameras: Camera names; each becomes an ``observation.images.<name>`` feature.
        episodes: Number of episodes.
        frames_per_episode: Frames per episode.
        image_shape: ``(height, width)`` of every camera image.
        fps: Frames per second.
        seed: Seed of the joint phases and the task choice.
        robot_type: Robot type stored in the dataset metadata.

    Raises:
        ValueError: ``root`` exists and is not empty, or an argument is out of range.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"Dataset root {root} already exists and is not empty; pass a new directory.")
    if not cameras or len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras must be distinct names, at least one; got {tuple(cameras)!r}.")
    if episodes < 1 or frames_per_episode < 2 or fps < 1:
        raise ValueError(
            f"Need episodes >= 1, frames_per_episode >= 2 and fps >= 1; got {episodes}, {frames_per_episode} and {fps}."
        )
    if len(image_shape) != 2 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (height, width) of positive sizes; got {image_shape!r}.")

    def write(directory: Path) -> None:
        _record_so100(
            directory,
            repo_id,
            cameras=tuple(cameras),
            episodes=episodes,
            frames_per_episode=frames_per_episode,
            image_shape=(int(image_shape[0]), int(image_shape[1])),
            fps=fps,
            seed=seed,
            robot_type=robot_type,
        )

    logger.info("Recording synthetic SO-100 dataset %s in %s", repo_id, root)
    return _publish(root, write, is_complete=_dataset_is_complete, replace=False)


def build_kit(
    cache_dir: Path,
    *,
    clients: int = 2,
    episodes: int = 4,
    frames_per_episode: int = 20,
    fps: int = 30,
    seed: int = 0,
) -> OfflineKit:
    """Build (or reuse) the backbone and ``clients`` synthetic datasets under ``cache_dir``.

    Layout: ``cache_dir/backbone`` and ``cache_dir/datasets/client-<i>``. Client ``i`` uses seed
    ``seed + i`` and cycles through different camera names (``("front", "wrist")``,
    ``("laptop", "phone")``, ...) and image shapes (48x64, 64x48), so clients are heterogeneous.
    Complete datasets are reused as they are.

    Args:
        cache_dir: Directory holding the kit; created if missing.
        clients: Number of client datasets (>= 1).
        episodes: Episodes per dataset.
        frames_per_episode: Frames per episode.
        fps: Frames per second.
        seed: Seed of client 0; client ``i`` uses ``seed + i``.

    Raises:
        ValueError: ``clients < 1``, or an existing dataset differs from what was asked for.
    """
    if clients < 1:
        raise ValueError(f"clients must be at least 1; got {clients}.")
    cache_dir = Path(cache_dir)
    backbone = build_backbone(cache_dir / "backbone")
    datasets = []
    for i in range(clients):
        root = cache_dir / "datasets" / f"client-{i}"
        if _dataset_is_complete(root):
            _check_dataset_size(root, episodes=episodes, frames=episodes * frames_per_episode)
        else:
            make_so100_dataset(
                root,
                dataset_repo_id(root),
                cameras=_CLIENT_CAMERAS[i % len(_CLIENT_CAMERAS)],
                episodes=episodes,
                frames_per_episode=frames_per_episode,
                image_shape=_CLIENT_IMAGE_SHAPES[i % len(_CLIENT_IMAGE_SHAPES)],
                fps=fps,
                seed=seed + i,
            )
        datasets.append(root)
    return OfflineKit(backbone=backbone, datasets=tuple(datasets))


def dataset_repo_id(root: Path) -> str:
    """The repository id :func:`build_kit` records for the dataset at ``root``: ``zk0/<name>``."""
    return f"zk0/{Path(root).name}"


# ---- Building in a temporary sibling -------------------------------------------------------


def _publish(
    target: Path,
    write: Callable[[Path], None],
    *,
    is_complete: Callable[[Path], bool],
    replace: bool,
) -> Path:
    """Run ``write(tmp)`` on a fresh path beside ``target``, then rename it to ``target``.

    If another process publishes ``target`` first, its complete result is kept and ours dropped.
    With ``replace``, an existing ``target`` is moved aside and deleted after the swap.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        built = scratch / target.name
        write(built)
        if replace and target.exists():
            target.rename(scratch / "stale")
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        try:
            built.rename(target)
        except OSError:
            if not is_complete(target):
                raise
            logger.info("%s was built concurrently; keeping that one", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# ---- Backbone internals ---------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _backbone_is_complete(directory: Path) -> bool:
    """True when the marker is current and every file it lists has the recorded hash."""
    try:
        marker = json.loads((directory / BACKBONE_MARKER).read_text())
        return marker["version"] == BACKBONE_VERSION and all(
            _sha256(directory / name) == digest for name, digest in marker["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_backbone(directory: Path) -> None:
    """Write config, tokenizer and processor into the new ``directory``, the marker last."""
    from transformers import SmolVLMConfig, SmolVLMProcessor
    from transformers.models.smolvlm import SmolVLMImageProcessor, SmolVLMVideoProcessor
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    directory.mkdir(parents=True)
    tokenizer = _train_tokenizer()
    side = {"longest_edge": _VISION["image_size"]}
    patches_per_side = _VISION["image_size"] // _VISION["patch_size"]
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_image_splitting=False, size=side, max_image_size=side),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(size=side, max_image_size=side),
        image_seq_len=patches_per_side**2 // _SCALE_FACTOR**2,
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )
    processor.save_pretrained(directory)

    special = {"pad_token_id": tokenizer.pad_token_id}
    config = SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "tie_word_embeddings": False,
            **special,
            **_TEXT,
        },
        vision_config=dict(_VISION),
        scale_factor=_SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids(_IMAGE_TOKENS["image_token"]),
        **special,
    )
    config.save_pretrained(directory)

    files = {p.name: _sha256(p) for p in sorted(directory.iterdir()) if p.is_file()}
    marker = {"version": BACKBONE_VERSION, "files": files}
    (directory / BACKBONE_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _train_tokenizer():
    """Train a byte-level BPE tokenizer on :data:`TASKS`, wrapped for ``transformers``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special_tokens = [_UNK, _BOS, _PAD, *_IMAGE_TOKENS.values(), *_ROW_COL_TOKENS]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TOKENIZER_VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # SmolVLA's preprocessor ends every task with a newline.
    bpe.train_from_iterator([f"{task}\n" for task in TASKS], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token=_UNK,
        bos_token=_BOS,
        eos_token=_IMAGE_TOKENS["end_of_utterance_token"],
        pad_token=_PAD,
        extra_special_tokens=dict(_IMAGE_TOKENS),
        model_max_length=_TEXT["max_position_embeddings"],
        padding_side="right",
    )


# ---- Dataset internals ----------------------------------------------------------------------


def _dataset_is_complete(root: Path) -> bool:
    """True when ``root`` holds finalized LeRobot metadata, episodes and data files."""
    return (
        (root / "meta" / "info.json").is_file()
        and any((root / "meta" / "episodes").rglob("*.parquet"))
        and any((root / "data").rglob("*.parquet"))
    )


def _check_dataset_size(root: Path, *, episodes: int, frames: int) -> None:
    info = json.loads((root / "meta" / "info.json").read_text())
    found = (info.get("total_episodes"), info.get("total_frames"))
    if found != (episodes, frames):
        raise ValueError(
            f"Dataset {root} has {found[0]} episodes and {found[1]} frames, but {episodes} episodes "
            f"and {frames} frames were asked for. Delete it to rebuild."
        )


def _record_so100(
    root: Path,
    repo_id: str,
    *,
    cameras: tuple[str, ...],
    episodes: int,
    frames_per_episode: int,
    image_shape: tuple[int, int],
    fps: int,
    seed: int,
    robot_type: str,
) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    joints = {"dtype": "float32", "shape": (len(SO100_JOINTS),), "names": list(SO100_JOINTS)}
    features = {"observation.state": joints, "action": dict(joints)}
    for camera in cameras:
        features[f"observation.images.{camera}"] = {
            "dtype": "image",
            "shape": (*image_shape, 3),
            "names": ["height", "width", "channels"],
        }

    rng = np.random.default_rng(seed)
    dataset = LeRobotDataset.create(repo_id, fps, features, root=root, robot_type=robot_type, use_videos=False)
    for _ in range(episodes):
        phase = rng.uniform(0.0, 2.0 * math.pi, size=len(SO100_JOINTS)).astype(np.float32)
        task = TASKS[int(rng.integers(len(TASKS)))]
        # One extra step so that the last frame's action is the state that would follow it.
        t = np.arange(frames_per_episode + 1, dtype=np.float32)[:, None] / fps
        states = _JOINT_CENTRE + _JOINT_AMPLITUDE * np.sin(2 * math.pi * _JOINT_FREQUENCY_HZ * t + phase)
        for k in range(frames_per_episode):
            frame = {"observation.state": states[k], "action": states[k + 1], "task": task}
            for c, camera in enumerate(cameras):
                frame[f"observation.images.{camera}"] = _render(states[k], c, image_shape)
            dataset.add_frame(frame)
        dataset.save_episode()
    dataset.finalize()


def _render(state: np.ndarray, camera: int, shape: tuple[int, int]) -> np.ndarray:
    """A smooth ``(H, W, 3)`` uint8 view: a gradient plus a soft blob placed by the joints.

    Shoulder pan and lift move the blob, the elbow its size, the gripper its brightness; each
    camera index tints the scene differently.
    """
    height, width = shape
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    unit = (state - _JOINT_CENTRE) / _JOINT_AMPLITUDE  # each joint in [-1, 1]
    cx, cy = 0.5 + 0.35 * unit[0], 0.5 + 0.35 * unit[1]
    radius = 0.15 + 0.05 * unit[2]
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    tint = np.array([(camera * 0.37) % 1.0, 0.5, 1.0 - (camera * 0.29) % 1.0], dtype=np.float32)
    channels = np.broadcast_arrays(0.6 * x + 0.2 * y, 0.3 + 0.3 * y, 0.5 - 0.3 * x)
    background = np.stack(channels, axis=-1) * tint
    colour = np.array([0.9, 0.2 + 0.3 * (unit[5] + 1.0), 0.1], dtype=np.float32)
    image = background * (1.0 - blob[..., None]) + colour * blob[..., None]
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
