"""Flower ClientApp: thin train/evaluate handlers over :mod:`zk0.task`.

Each message starts a fresh ClientApp process. The node's dataset URI comes
from ``context.node_config``; only trainable parameters and scalar metrics
leave the node.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from zk0 import config as keys
from zk0.config import NodeConfig, RunConfig
from zk0.datasets import episode_digests
from zk0.integrity import IntegrityError, digest, episode_tags
from zk0.logs import use_flower_handlers
from zk0.node import Node, Split, evaluate_node, open_loader, open_node
from zk0.policy import from_arrays, to_arrays, trainable_state
from zk0.task import metrics, train

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

log = logging.getLogger(__name__)
app = ClientApp()


def _setup(arrays: ArrayRecord, round_config: ConfigRecord, context: Context, *, split: Split) -> Node:
    use_flower_handlers()
    if round_config.get(keys.ARRAYS_DIGEST) != digest(arrays):
        raise IntegrityError("the received global parameters do not match the server's digest; refusing them")
    cfg = RunConfig.from_run_config(context.run_config)
    return open_node(cfg, NodeConfig.from_node_config(context.node_config), from_arrays(arrays), split)


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
    n = _setup(arrays, round_config, context, split="train")
    server_round = int(round_config[keys.SERVER_ROUND])
    n.policy.config.optimizer_lr = float(round_config[keys.LEARNING_RATE])
    loader = open_loader(n, shuffle=True, seed=n.cfg.seed + server_round)
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
    return MetricRecord(evaluate_node(_setup(arrays, round_config, context, split="held-out")))


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
