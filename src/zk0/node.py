"""One dataset and the policy that trains or is evaluated on it.

Shared by the ClientApp and the server's own evaluation. No flwr here: the
policy gets its trainable parameters as tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from zk0.config import NodeConfig, RunConfig
from zk0.datasets import DatasetSource, camera_map, check_so100, normalisation_stats, rename_cameras, split_episodes
from zk0.policy import build_policy, load_trainable
from zk0.task import Prepare, evaluate, make_loader, metrics, resolve_device

if TYPE_CHECKING:
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from torch.utils.data import DataLoader

log = logging.getLogger(__name__)

# Which episodes: the node's training split, its held-out split, or all (a server's own evaluation set).
Split = Literal["train", "held-out", "all"]


@dataclass
class Node:
    """Settings, the policy holding the given weights, and the episodes of each split; ``split`` is in use."""

    cfg: RunConfig
    node: NodeConfig
    policy: SmolVLAPolicy
    prepare: Prepare
    source: DatasetSource
    meta: LeRobotDatasetMetadata
    splits: dict[Split, list[int]]
    split: Split
    device: torch.device

    @property
    def episodes(self) -> list[int]:
        return self.splits[self.split]

    def using(self, split: Split) -> Node:
        """The same node and policy on another split's episodes."""
        if split == "held-out" and not self.splits[split]:
            raise RuntimeError("this node has no held-out episodes (eval-fraction is 0 or the dataset has one episode)")
        return replace(self, split=split)


def open_node(cfg: RunConfig, node: NodeConfig, trainable: Mapping[str, torch.Tensor], split: Split) -> Node:
    """Check the dataset, build the policy with ``trainable`` loaded, and its pre-processor (this dataset's stats)."""
    source = DatasetSource.parse(node.dataset_uri)
    meta = source.metadata()
    cameras = check_so100(meta, state_dim=cfg.state_dim, action_dim=cfg.action_dim)
    mapping = camera_map(cameras, cfg.camera_features, node.camera_map)
    train_eps, eval_eps = split_episodes(meta.total_episodes, cfg.eval_fraction, cfg.seed)
    splits: dict[Split, list[int]] = {"train": train_eps, "held-out": eval_eps, "all": list(range(meta.total_episodes))}
    device = resolve_device(node.device)
    if node.threads:
        import torch

        torch.set_num_threads(node.threads)
    policy = build_policy(cfg, str(device))
    load_trainable(policy, trainable)

    from lerobot.policies.factory import make_pre_post_processors

    preprocessor, _ = make_pre_post_processors(policy.config, dataset_stats=normalisation_stats(meta))

    def prepare(batch: dict) -> dict:
        return preprocessor(rename_cameras(batch, mapping))

    log.info("cameras %s; %d %s episodes", mapping, len(splits[split]), split)
    return Node(cfg, node, policy, prepare, source, meta, splits, "all", device).using(split)


def open_loader(n: Node, *, shuffle: bool, seed: int) -> DataLoader:
    from lerobot.datasets.factory import resolve_delta_timestamps

    dataset = n.source.open(n.episodes, resolve_delta_timestamps(n.policy.config, n.meta))
    return make_loader(dataset, batch_size=n.cfg.batch_size, shuffle=shuffle, seed=seed, num_workers=n.node.num_workers)


def evaluate_node(n: Node) -> dict[str, float]:
    """Seeded flow-matching loss and action-chunk MSE on the node's episodes, as metrics."""
    result = evaluate(
        n.policy,
        open_loader(n, shuffle=False, seed=n.cfg.seed),
        n.prepare,
        device=n.device,
        max_batches=n.cfg.eval_batches,
        seed=n.cfg.seed,
    )
    log.info("eval: loss %.4f, action MSE %.4f on %d samples", result.loss, result.action_mse, result.num_examples)
    return dict(metrics(result))
