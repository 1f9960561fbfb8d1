"""Flower ClientApp: thin train/evaluate handlers over :mod:`zk0.task`.

Each message starts a fresh ClientApp process. The node's dataset URI comes
from ``context.node_config``; only trainable parameters and scalar metrics
leave the node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from zk0 import config as keys
from zk0.config import NodeConfig, RunConfig
from zk0.datasets import (
    DatasetSource,
    camera_map,
    check_so100,
    episode_digests,
    normalisation_stats,
    rename_cameras,
    split_episodes,
)
from zk0.integrity import IntegrityError, digest, episode_tags
from zk0.logs import use_flower_handlers
from zk0.policy import build_policy, from_arrays, load_trainable, to_arrays, trainable_state
from zk0.task import Prepare, evaluate, make_loader, metrics, resolve_device, train

if TYPE_CHECKING:
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from torch.utils.data import DataLoader

log = logging.getLogger(__name__)
app = ClientApp()


@dataclass
class _Node:
    """What both handlers need: settings, the policy holding the received weights, the data."""

    cfg: RunConfig
    node: NodeConfig
    policy: SmolVLAPolicy
    prepare: Prepare
    source: DatasetSource
    meta: LeRobotDatasetMetadata
    episodes: list[int]  # the train or the held-out split
    device: torch.device


def _setup(arrays: ArrayRecord, round_config: ConfigRecord, context: Context, *, held_out: bool) -> _Node:
    use_flower_handlers()
    if round_config.get(keys.ARRAYS_DIGEST) != digest(arrays):
        raise IntegrityError("the received global parameters do not match the server's digest; refusing them")
    cfg = RunConfig.from_run_config(context.run_config)
    node = NodeConfig.from_node_config(context.node_config)
    source = DatasetSource.parse(node.dataset_uri)
    meta = source.metadata()
    cameras = check_so100(meta, state_dim=cfg.state_dim, action_dim=cfg.action_dim)
    mapping = camera_map(cameras, cfg.camera_features, node.camera_map)
    train_eps, eval_eps = split_episodes(meta.total_episodes, cfg.eval_fraction, cfg.seed)
    if held_out and not eval_eps:
        raise RuntimeError("this node has no held-out episodes (eval-fraction is 0 or the dataset has one episode)")
    device = resolve_device(node.device)
    policy = build_policy(cfg, str(device))
    load_trainable(policy, from_arrays(arrays))

    from lerobot.policies.factory import make_pre_post_processors

    preprocessor, _ = make_pre_post_processors(policy.config, dataset_stats=normalisation_stats(meta))

    def prepare(batch: dict) -> dict:
        return preprocessor(rename_cameras(batch, mapping))

    log.info("cameras %s; %d train / %d held-out episodes", mapping, len(train_eps), len(eval_eps))
    return _Node(cfg, node, policy, prepare, source, meta, eval_eps if held_out else train_eps, device)


def _open_loader(n: _Node, *, shuffle: bool, seed: int) -> DataLoader:
    from lerobot.datasets.factory import resolve_delta_timestamps

    dataset = n.source.open(n.episodes, resolve_delta_timestamps(n.policy.config, n.meta))
    return make_loader(dataset, batch_size=n.cfg.batch_size, shuffle=shuffle, seed=seed, num_workers=n.node.num_workers)


def describe_data(dataset: LeRobotDataset, key_hex: str) -> ConfigRecord:
    """What the server learns of this node's data: counts, and keyed tags of its episodes' contents.

    The tags let the server see two nodes training on the same recordings
    (duplicates bias the average) without learning anything about them.
    """
    tags = episode_tags(bytes.fromhex(key_hex), episode_digests(dataset)) if key_hex else []
    return ConfigRecord({keys.EPISODES: dataset.num_episodes, keys.NUM_EXAMPLES: len(dataset), keys.EPISODE_TAGS: tags})


def fit(
    arrays: ArrayRecord, round_config: ConfigRecord, context: Context
) -> tuple[ArrayRecord, MetricRecord, ConfigRecord]:
    """Fine-tune the received global parameters on this node's training episodes.

    Returns the trained parameters, the training metrics and :func:`describe_data`.
    """
    n = _setup(arrays, round_config, context, held_out=False)
    server_round = int(round_config[keys.SERVER_ROUND])
    n.policy.config.optimizer_lr = float(round_config[keys.LEARNING_RATE])
    loader = _open_loader(n, shuffle=True, seed=n.cfg.seed + server_round)
    data = describe_data(loader.dataset, str(round_config.get(keys.DATA_KEY, "")))
    result = train(
        n.policy,
        loader,
        n.prepare,
        steps=n.cfg.local_steps,
        device=n.device,
        proximal_mu=float(round_config[keys.PROXIMAL_MU]),
    )
    log.info(
        "round %d: %d steps, %d samples, loss %.4f, %.1f s",
        server_round,
        result.steps,
        result.num_examples,
        result.loss,
        result.seconds,
    )
    return to_arrays(trainable_state(n.policy), n.cfg.wire_dtype), MetricRecord(dict(metrics(result))), data


def score(arrays: ArrayRecord, round_config: ConfigRecord, context: Context) -> MetricRecord:
    """Evaluate the received global parameters on this node's held-out episodes."""
    n = _setup(arrays, round_config, context, held_out=True)
    result = evaluate(
        n.policy,
        _open_loader(n, shuffle=False, seed=n.cfg.seed),
        n.prepare,
        device=n.device,
        max_batches=n.cfg.eval_batches,
        seed=n.cfg.seed,
    )
    log.info("eval: loss %.4f, action MSE %.4f on %d samples", result.loss, result.action_mse, result.num_examples)
    return MetricRecord(dict(metrics(result)))


@app.train()
def train_handler(msg: Message, context: Context) -> Message:
    arrays, metric_record, data = fit(msg.content["arrays"], msg.content["config"], context)
    integrity = ConfigRecord({keys.ARRAYS_DIGEST: digest(arrays)})
    content = RecordDict({"arrays": arrays, "metrics": metric_record, keys.INTEGRITY: integrity, keys.DATA: data})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    metric_record = score(msg.content["arrays"], msg.content["config"], context)
    return Message(content=RecordDict({"metrics": metric_record}), reply_to=msg)
