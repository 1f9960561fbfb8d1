"""Flower ClientApp: thin train/evaluate handlers over :mod:`zk0.task`.

Each message starts a fresh ClientApp process. The node's dataset URI comes
from ``context.node_config``; only trainable parameters and scalar metrics
leave the node. Parameters travel packed (:mod:`zk0.packing`): the handlers
unpack what arrives and pack what they send; everything between works on
named arrays.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from zk0 import config as keys
from zk0.compression import encode_update
from zk0.config import NodeConfig, RunConfig
from zk0.datasets import episode_digests
from zk0.integrity import IntegrityError, digest, episode_tags
from zk0.logs import use_flower_handlers
from zk0.node import Node, Split, evaluate_node, open_loader, open_node
from zk0.packing import drain, pack, unpack
from zk0.policy import from_arrays, trainable_state
from zk0.task import metrics, train

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

log = logging.getLogger(__name__)
app = ClientApp()


def _setup(
    arrays: ArrayRecord, round_config: ConfigRecord, context: Context, *, split: Split
) -> tuple[Node, dict[str, torch.Tensor]]:
    """The node with the received global parameters loaded, and those parameters."""
    use_flower_handlers()
    if round_config.get(keys.ARRAYS_DIGEST) != digest(arrays):
        raise IntegrityError("the received global parameters do not match the server's digest; refusing them")
    cfg = RunConfig.from_run_config(context.run_config)
    received = from_arrays(arrays)
    return open_node(cfg, NodeConfig.from_node_config(context.node_config), received, split), received


def describe_data(dataset: LeRobotDataset, key_hex: str) -> ConfigRecord:
    """What the server learns of this node's data: counts, and keyed tags of its episodes' contents.

    The tags let the server see two nodes training on the same recordings
    (duplicates bias the average) without learning anything about them.
    """
    tags = episode_tags(bytes.fromhex(key_hex), episode_digests(dataset)) if key_hex else []
    return ConfigRecord({keys.EPISODES: dataset.num_episodes, keys.NUM_EXAMPLES: len(dataset), keys.EPISODE_TAGS: tags})


def fit(
    arrays: ArrayRecord, round_config: ConfigRecord, context: Context
) -> tuple[ArrayRecord, MetricRecord, ConfigRecord, MetricRecord | None]:
    """Fine-tune the received global parameters on this node's training episodes.

    Returns the update (see :func:`zk0.compression.encode_update`), the training
    metrics, :func:`describe_data`, and, when the server asked for it
    (``evaluate-first``), the received model's held-out metrics, measured before training.
    """
    n, received = _setup(arrays, round_config, context, split="train")
    server_round = int(round_config[keys.SERVER_ROUND])
    start_metrics = None
    if round_config.get(keys.EVALUATE_FIRST):
        if n.splits["held-out"]:
            start_metrics = MetricRecord(evaluate_node(n.using("held-out")))
        else:
            log.warning("round %d: no held-out episodes to evaluate the global model on (eval-fraction)", server_round)
    n.policy.config.optimizer_lr = float(round_config[keys.LEARNING_RATE])
    torch.manual_seed(n.cfg.seed + server_round)  # flow matching's noise and times: a round trains reproducibly
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
    update = encode_update(trainable_state(n.policy), received, n.cfg.update_compression, n.cfg.wire_dtype)
    return update, MetricRecord(dict(metrics(result))), data, start_metrics


def score(arrays: ArrayRecord, round_config: ConfigRecord, context: Context) -> MetricRecord:
    """Evaluate the received global parameters on this node's held-out episodes."""
    n, _ = _setup(arrays, round_config, context, split="held-out")
    return MetricRecord(evaluate_node(n))


@app.train()
def train_handler(msg: Message, context: Context) -> Message:
    arrays, metric_record, data, start_metrics = fit(unpack(msg.content["arrays"]), msg.content["config"], context)
    integrity = ConfigRecord({keys.ARRAYS_DIGEST: digest(arrays)})
    content = RecordDict(
        {"arrays": pack(drain(arrays)), "metrics": metric_record, keys.INTEGRITY: integrity, keys.DATA: data}
    )
    if start_metrics is not None:
        content[keys.START_EVALUATE] = start_metrics
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    metric_record = score(unpack(msg.content["arrays"]), msg.content["config"], context)
    return Message(content=RecordDict({"metrics": metric_record}), reply_to=msg)
