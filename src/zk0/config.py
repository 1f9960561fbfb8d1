"""Typed settings: the federation's run config and each node's own node config.

Keys on the wire, in TOML and in ``--node-config`` are kebab-case and written
once, here. ``RunConfig`` is built only by :meth:`RunConfig.from_run_config`,
``NodeConfig`` only by :meth:`NodeConfig.from_node_config`; both reject a bad
value with a message that quotes it and says what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from zk0.errors import ConfigError

WireDtype = Literal["float32", "bfloat16"]
UpdateCompression = Literal["none", "int8"]
Device = Literal["auto", "cpu", "cuda"]


# Per-round values sent by the strategy in ``msg.content["config"]``.
SERVER_ROUND = "server-round"
LEARNING_RATE = "learning-rate"
PROXIMAL_MU = "proximal-mu"
# In a train message's config: evaluate the received global model on the held-out episodes before
# training it; the reply then carries those metrics as the MetricRecord START_EVALUATE. Saves a
# separate evaluate message (a ClientApp process and a round trip) per round.
EVALUATE_FIRST = "evaluate-first"
START_EVALUATE = "start-evaluate"
# Digest of the arrays in a message (see zk0.integrity): in the server's config, and in
# the client's reply under the config record INTEGRITY.
ARRAYS_DIGEST = "arrays-digest"
INTEGRITY = "integrity"
# Federation-wide key (hex) in the server's train config; the client replies with a config
# record DATA: counts and keyed tags of its training episodes, never a name or URI.
DATA_KEY = "data-key"
DATA = "data"
EPISODES = "episodes"
EPISODE_TAGS = "episode-tags"

# Metric keys in the replies.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"
ACTION_MSE = "action-mse"


# Field annotations (strings under postponed evaluation) to the type a value must have.
_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "WireDtype": str,
    "UpdateCompression": str,
    "Device": str,
}


def _key(name: str) -> str:
    return name.replace("_", "-")


def _coerce(key: str, value: Any, expected: type) -> Any:
    """Return ``value`` as ``expected`` or raise ConfigError naming the key."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, expected) and not (expected is not bool and isinstance(value, bool)):
        return value
    raise ConfigError(f"setting '{key}' must be {expected.__name__}, got {value!r}")


def _load(cls: type, values: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    hints = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - {_key(n) for n in hints})
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_key(n) for n in hints))}"
        )
    kwargs: dict[str, Any] = {}
    for name, field in hints.items():
        key = _key(name)
        if key not in values:
            if partial:
                continue
            raise ConfigError(f"setting '{key}' is missing from the run config")
        kwargs[name] = _coerce(key, values[key], _TYPES[field.type])
    return kwargs


def _check_range(key: str, value: float, *, low: float, high: float | None = None, low_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"setting '{key}' must be {bound}, got {value!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"setting '{key}' must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """Settings for the whole federation (``[tool.flwr.app.config]`` + overrides)."""

    # --- policy -------------------------------------------------------------
    # Hub id, local pretrained SmolVLA dir, or local SmolVLM backbone dir (fresh init).
    model: str
    # Global model features: cameras become observation.images.camera1..N.
    num_cameras: int
    state_dim: int
    action_dim: int
    # Images are resized with padding to image_size x image_size by SmolVLA.
    image_size: int
    # Actions predicted per forward pass, and executed per prediction.
    chunk_size: int
    n_action_steps: int
    # --- federation ---------------------------------------------------------
    num_server_rounds: int
    # Nodes that must be online before a round is sampled.
    min_clients: int
    fraction_train: float
    fraction_evaluate: float
    # --- local training -----------------------------------------------------
    # Optimizer steps per round on each node (not epochs).
    local_steps: int
    batch_size: int
    learning_rate: float
    # FedProx proximal term weight; 0 is plain FedAvg.
    proximal_mu: float
    # Updates whose L2 distance from the global model exceeds this are rejected; 0 is off.
    max_update_norm: float
    # --- evaluation ---------------------------------------------------------
    # Share of each node's episodes held out for evaluation.
    eval_fraction: float
    # Batches of held-out data per evaluation; 0 evaluates all of it.
    eval_batches: int
    # Evaluate every this many rounds (and the last round of a session); round 0, the
    # untrained model, is evaluated when a federation starts.
    eval_every: int
    # The server's own evaluation set (hf:/local: URI), all its episodes, on evaluation rounds; empty: none.
    eval_dataset_uri: str
    # --- results ---------------------------------------------------------------
    # Save a LeRobot-loadable checkpoint every this many rounds (and at a session's end); 0: at the end only.
    checkpoint_every: int
    # Push each saved checkpoint to this hub model repo (token from HF_TOKEN / HF_TOKEN_PATH); empty: never.
    hub_repo_id: str
    # Log round metrics to Weights & Biases from the server (needs WANDB_API_KEY, or WANDB_MODE=offline).
    use_wandb: bool
    # --- transport and reproducibility ---------------------------------------
    wire_dtype: WireDtype
    # "int8": clients send their update as int8 deltas to the global model, one scale per tensor (4x fewer bytes).
    update_compression: UpdateCompression
    seed: int

    def __post_init__(self) -> None:
        for key in (
            "num-cameras",
            "state-dim",
            "action-dim",
            "image-size",
            "chunk-size",
            "n-action-steps",
            "num-server-rounds",
            "min-clients",
            "local-steps",
            "batch-size",
            "eval-every",
        ):
            _check_range(key, getattr(self, key.replace("-", "_")), low=1)
        if self.n_action_steps > self.chunk_size:
            raise ConfigError(
                f"setting 'n-action-steps' ({self.n_action_steps}) must be <= 'chunk-size' ({self.chunk_size})"
            )
        _check_range("fraction-train", self.fraction_train, low=0.0, high=1.0, low_open=True)
        _check_range("fraction-evaluate", self.fraction_evaluate, low=0.0, high=1.0)
        _check_range("learning-rate", self.learning_rate, low=0.0, low_open=True)
        _check_range("proximal-mu", self.proximal_mu, low=0.0)
        _check_range("max-update-norm", self.max_update_norm, low=0.0)
        _check_range("eval-fraction", self.eval_fraction, low=0.0, high=0.9)
        _check_range("eval-batches", self.eval_batches, low=0)
        _check_range("checkpoint-every", self.checkpoint_every, low=0)
        _check_choice("wire-dtype", self.wire_dtype, get_args(WireDtype))
        _check_choice("update-compression", self.update_compression, get_args(UpdateCompression))
        if not self.model.strip():
            raise ConfigError("setting 'model' must name a hub id or a local directory, got ''")

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's ``context.run_config`` (all keys required)."""
        return cls(**_load(cls, run_config, partial=False))

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case mapping :meth:`from_run_config` reads (saved with checkpoints)."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}

    @property
    def camera_features(self) -> tuple[str, ...]:
        """The global model's image feature keys, in order."""
        return tuple(f"observation.images.camera{i}" for i in range(1, self.num_cameras + 1))


@dataclass(frozen=True)
class NodeConfig:
    """Facts about one node, from ``flower-supernode --node-config``."""

    # hf:owner/name[@revision] or local:/abs/path
    dataset_uri: str
    # "datasetcam=camera1,other=camera2"; empty maps cameras in sorted order.
    camera_map: str = ""
    device: Device = "auto"
    # DataLoader worker processes for reading the dataset.
    num_workers: int = 2
    # torch CPU threads for training and evaluation; 0: torch's default (one per core). Nodes that
    # share a machine's cores each take their share: oversubscribed threads slow every node down.
    threads: int = 0

    def __post_init__(self) -> None:
        _check_choice("device", self.device, get_args(Device))
        _check_range("num-workers", self.num_workers, low=0)
        _check_range("threads", self.threads, low=0)

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> NodeConfig:
        """Build from Flower's ``context.node_config``; only ``dataset-uri`` is required."""
        known = {_key(f.name) for f in fields(cls)}
        # Flower adds its own keys (e.g. partition-id) to node_config; keep ours.
        ours = {k: v for k, v in node_config.items() if k in known}
        if "dataset-uri" not in ours:
            raise ConfigError(
                "node setting 'dataset-uri' is missing; start the client with "
                "'zk0bot client start hf:owner/name' (it sets the SuperNode's --node-config)"
            )
        return cls(**_load(cls, ours, partial=True))
