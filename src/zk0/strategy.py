"""zk0's strategy: sample-weighted FedAvg (FedProx when mu > 0) in float32 over wire-encoded updates.

It extends Flower's FedAvg by its hooks: the global model is kept in float32
and encoded in the wire dtype once per round, packed into few arrays
(:mod:`zk0.packing`). Replies are taken one at a time as they arrive
(:mod:`zk0.streaming`); each is unpacked and checked tensor by tensor
(digest, names, shapes, finite values, update norm), added to a running
float32 sum and dropped, so the server holds one update at a time. The new
global model is checkpointed and one history line is written per round.

Evaluation rides on training: a train message asks the nodes to evaluate the
model they receive before training it (``evaluate-first``), so a round costs
one message per node; only the last round of a session sends evaluate messages.
A round's history line is written once its model has been evaluated, i.e.
during the next round, or at once when no evaluation is due.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from zk0 import checkpoints, hub
from zk0 import config as keys
from zk0.compression import decode_tensor
from zk0.config import RunConfig
from zk0.integrity import digest, shared_episodes
from zk0.packing import pack, unpack
from zk0.policy import PolicyError, from_arrays, to_arrays
from zk0.streaming import StreamingGrid
from zk0.tracking import Tracker

log = logging.getLogger(__name__)


def names_digest(names: Iterable[str]) -> str:
    """SHA-256 of the sorted parameter names, one per line."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


class RunningMean:
    """A weighted mean of float32 tensors, added one update at a time.

    Only the running sum is kept, so aggregating N updates holds one model's
    worth of sums however large N is; each update can be dropped once added.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.total = 0.0
        self.count = 0

    def add(self, tensors: Iterable[tuple[str, torch.Tensor]], weight: float) -> None:
        """Add ``(name, tensor)`` pairs (a generator decoding one tensor at a time holds one at a time)."""
        for name, value in tensors:
            if name in self.sums:
                self.sums[name].add_(value.to(torch.float32), alpha=weight)
            else:
                self.sums[name] = value.to(torch.float32) * weight
        self.total += weight
        self.count += 1

    def result(self) -> dict[str, torch.Tensor]:
        """The mean (the sums are divided in place: call once)."""
        return {name: value.div_(self.total) for name, value in self.sums.items()}


def _get[R: (ArrayRecord, ConfigRecord, MetricRecord)](content: RecordDict, key: str, kind: type[R]) -> R | None:
    """``content[key]`` if it is a ``kind``.

    Not ``content.metric_records`` and the like: each such view is a reference
    cycle holding the whole RecordDict, so a reply read through one stays in
    memory, arrays and all, until Python's cyclic GC happens to run.
    """
    value = content.get(key)
    return value if isinstance(value, kind) else None


def check_metrics(record: MetricRecord | None) -> float:
    """The weight (``num-examples``) of a client's metrics; raises ValueError saying what is wrong.

    Every value must be a single number (zk0's ClientApp sends no lists) and the
    weight positive and finite: Flower's weighted metric average fails on anything else.
    """
    if record is None:
        raise ValueError("expected a MetricRecord 'metrics'")
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"metric {key!r} must be a number, got {value!r}")
    weight = record.get(keys.NUM_EXAMPLES)
    if weight is None or not 0 < weight < math.inf:
        raise ValueError(f"'{keys.NUM_EXAMPLES}' must be a positive number, got {weight!r}")
    return float(weight)


def _averageable(rnd: int, node: int, evaluation: MetricRecord | None) -> bool:
    """Whether a node's evaluation of round ``rnd``'s model can be averaged; logs why not."""
    try:
        check_metrics(evaluation)
    except ValueError as err:
        log.warning("round %d: ignored the evaluation from node %d: %s", rnd, node, err)
        return False
    return True


def weighted_mean(updates: Iterable[tuple[dict[str, torch.Tensor], float]]) -> dict[str, torch.Tensor]:
    """Average float32 tensors weighted by the given (positive) weights."""
    mean = RunningMean()
    for tensors, weight in updates:
        mean.add(tensors.items(), weight)
    return mean.result()


@dataclass
class _Tally:
    """What a round's train replies add up to, one reply at a time (no reply is kept)."""

    mean: RunningMean = field(default_factory=RunningMean)
    metrics: list[RecordDict] = field(default_factory=list)  # of valid updates, for the weighted train metrics
    clients: list[dict[str, Any]] = field(default_factory=list)  # a history entry per valid update
    evaluations: list[tuple[int, MetricRecord]] = field(default_factory=list)  # of the start model, by node
    tags: dict[int, list[str]] = field(default_factory=dict)  # episode tags of valid updates, by node
    rejected: int = 0


class Zk0Strategy(FedAvg):
    """FedAvg/FedProx for SmolVLA's trainable parameters.

    Parameters
    ----------
    cfg : RunConfig
        Run settings: min-clients (nodes online before sampling and the least
        sampled per round), fraction-train/-evaluate, proximal-mu,
        learning-rate and wire-dtype are used here.
    out_dir : Path
        Where the global checkpoint and ``history.jsonl`` are written.
    run_id : int (default: 0)
        Flower run id, recorded in the history.
    rounds_done : int (default: 0)
        Rounds trained in earlier sessions; this session's round k is round
        ``rounds_done + k`` in checkpoints, history and the clients' config.
    target : int (default: 0)
        The round this session trains up to, kept in the checkpoint so a
        session cut short can be finished (0: rounds_done + num-server-rounds).
    """

    def __init__(self, cfg: RunConfig, out_dir: Path, run_id: int = 0, rounds_done: int = 0, target: int = 0) -> None:
        super().__init__(
            fraction_train=cfg.fraction_train,
            fraction_evaluate=cfg.fraction_evaluate,
            min_train_nodes=cfg.min_clients,
            min_evaluate_nodes=cfg.min_clients if cfg.fraction_evaluate > 0 else 0,
            min_available_nodes=cfg.min_clients,
            weighted_by_key=keys.NUM_EXAMPLES,
        )
        self.cfg = cfg
        self.out_dir = out_dir
        self.run_id = run_id
        self.rounds_done = rounds_done
        self.target = target or rounds_done + cfg.num_server_rounds
        self._global: dict[str, torch.Tensor] = {}  # the float32 global model this round started from
        self._base: dict[str, torch.Tensor] = {}  # the same as the nodes decoded it (int8 deltas are to this)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._round: dict[str, Any] = {}
        # The history record of the model just sent out, while its evaluation rides on this round's training.
        self._pending: dict[str, Any] | None = None
        self.tracker = Tracker()  # off until start() opens a run (use-wandb)

    def summary(self) -> None:
        log.info(
            "zk0 strategy: proximal-mu %s, wire-dtype %s, float32 aggregation, checkpoints in %s",
            self.cfg.proximal_mu,
            self.cfg.wire_dtype,
            self.out_dir,
        )
        super().summary()

    def _encode(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        """The global model in the wire dtype, packed; its digest goes into ``config`` for the clients to verify."""
        self._global = from_arrays(arrays)
        self._shapes = {name: tuple(t.shape) for name, t in self._global.items()}
        # Flower's global record is zk0's float32 encoding already: packed as it is on a float32 wire.
        encoded = arrays if self.cfg.wire_dtype == "float32" else to_arrays(self._global, self.cfg.wire_dtype)
        lossy = self.cfg.wire_dtype != "float32" and self.cfg.update_compression != "none"
        self._base = from_arrays(encoded) if lossy else self._global
        config[keys.ARRAYS_DIGEST] = digest(encoded)
        return pack(encoded.items())

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[keys.PROXIMAL_MU] = self.cfg.proximal_mu
        config[keys.LEARNING_RATE] = self.cfg.learning_rate
        config[keys.DATA_KEY] = checkpoints.federation_key(self.out_dir).hex()
        config[keys.EVALUATE_FIRST] = self._pending is not None
        encoded = self._encode(arrays, config)
        # The digest of the float32 global model the round starts from: a checkpoint's "digest" after a resume.
        start = config[keys.ARRAYS_DIGEST] if self.cfg.wire_dtype == "float32" else digest(arrays)
        self._round = {"round": self.rounds_done + server_round, "started": time.time(), "start-digest": start}
        return self._sent(super().configure_train(self.rounds_done + server_round, encoded, config, grid))

    def _sent(self, messages: Iterable[Message]) -> list[Message]:
        """Count the parameter bytes going out this round (train and evaluate messages both carry the model)."""
        messages = list(messages)
        records = [r for m in messages for r in m.content.values() if isinstance(r, ArrayRecord)]
        size = sum(len(a.data) for r in records for a in r.values())
        self._round["bytes-sent"] = self._round.get("bytes-sent", 0) + size
        return messages

    def _evaluated(self, rnd: int) -> bool:
        """Whether round ``rnd``'s model is evaluated (eval-every, and a session's last round always)."""
        return not (rnd % self.cfg.eval_every and rnd != self.target)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        rnd = self.rounds_done + server_round
        if not self._evaluated(rnd):
            return []
        if rnd != self.target and self.cfg.fraction_evaluate > 0:  # the next round's nodes evaluate it first
            self._pending = self._round
            return []
        return self._sent(super().configure_evaluate(rnd, self._encode(arrays, config), config, grid))

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's round loop over a :class:`StreamingGrid`; round 1 evaluates a new federation's untrained model."""
        self.tracker = Tracker.start(
            self.cfg.use_wandb,
            project="zk0",
            run_name=f"session-{self.run_id}",
            config=self.cfg.to_run_config(),
            directory=self.out_dir / "wandb",
        )
        try:
            if self.rounds_done == 0 and self.cfg.fraction_evaluate > 0:
                # Round 0, the untrained model every round is compared with, is evaluated by round 1's nodes.
                self._pending = {"round": 0, "start-digest": digest(initial_arrays)}
            streaming = StreamingGrid(grid)  # a Grid by delegation
            return super().start(
                streaming, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn
            )
        finally:
            self.tracker.finish()

    def _check(self, msg: Message) -> tuple[ArrayRecord, MetricRecord, float, int]:
        """Check one reply, decoding a tensor at a time; its unpacked update, metrics, weight and wire bytes.

        Raises ValueError saying what is wrong with it.
        """
        records = [r for r in msg.content.values() if isinstance(r, ArrayRecord)]
        if len(records) != 1:
            raise ValueError("expected one ArrayRecord")
        metric_record = _get(msg.content, "metrics", MetricRecord)
        weight = check_metrics(metric_record)
        size = sum(len(a.data) for a in records[0].values())
        try:
            record = unpack(records[0])
        except PolicyError as err:
            raise ValueError(str(err)) from None
        integrity = _get(msg.content, keys.INTEGRITY, ConfigRecord)
        claimed = integrity.get(keys.ARRAYS_DIGEST) if integrity is not None else None
        if claimed != digest(record):
            raise ValueError(f"digest mismatch: the reply claims {claimed!r}, its arrays hash differently")
        if set(record) != set(self._shapes):
            missing, extra = sorted(set(self._shapes) - set(record)), sorted(set(record) - set(self._shapes))
            raise ValueError(f"parameter names differ: missing {missing[:3]}, extra {extra[:3]}")
        squares = 0.0
        for name, value in self._decoded(record):
            if tuple(value.shape) != self._shapes[name]:
                raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {self._shapes[name]}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: non-finite values")
            squares += torch.linalg.vector_norm(value.sub_(self._global[name])).item() ** 2  # value is ours
        norm = squares**0.5
        if 0 < self.cfg.max_update_norm < norm:
            raise ValueError(f"update norm {norm:.4g} exceeds max-update-norm {self.cfg.max_update_norm:g}")
        return record, metric_record, float(weight), size

    def _decoded(self, record: ArrayRecord) -> Iterator[tuple[str, torch.Tensor]]:
        """The update's tensors as float32, decoded one at a time (int8 deltas against what the nodes received)."""
        for name, array in record.items():
            try:
                yield name, decode_tensor(name, array, self._base)
            except PolicyError as err:
                raise ValueError(str(err)) from None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = self._round["round"]  # counted across sessions
        tally = _Tally()
        for msg in replies:
            self._take(rnd, msg, tally)
            del msg  # dropped before the next reply is pulled: one update held at a time
        if self._pending is not None:
            self._close(self._pending, tally.evaluations)
            self._pending = None
        mean = tally.mean
        self._round.update(clients=tally.clients, accepted=mean.count, rejected=tally.rejected)
        self._round["bytes-received"] = sum(c["payload-bytes"] for c in tally.clients)
        self._warn_shared(rnd, tally.tags)
        if mean.count < self.cfg.min_clients:
            log.warning(
                "round %d: %d valid update(s), fewer than min-clients %d; the global model stays as it was",
                rnd,
                mean.count,
                self.cfg.min_clients,
            )
            # The round is done, unchanged: a resume starts after it.
            self._checkpoint(rnd, self._global, to_arrays(self._global, "float32"))
            return None, None
        glob = mean.result()
        self._global = self._base = {}  # the round's start model: freed before the new one is encoded
        metrics = aggregate_metricrecords(tally.metrics, self.weighted_by_key)
        self._round["train"] = dict(metrics)
        arrays = to_arrays(glob, "float32")  # encoded once: the checkpoint's digest and the next round's input
        self._checkpoint(rnd, glob, arrays)
        log.info(
            "round %d: aggregated %d updates (%d rejected): %s",
            rnd,
            mean.count,
            tally.rejected,
            {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()},
        )
        return arrays, metrics

    def _take(self, rnd: int, msg: Message, tally: _Tally) -> None:
        """Add one train reply to the round's tally: its update to the mean if valid, else log why."""
        node = msg.metadata.src_node_id
        if msg.has_error():
            log.warning("round %d: node %d failed: %s", rnd, node, msg.error.reason)
            tally.rejected += 1
            return
        evaluation = _get(msg.content, keys.START_EVALUATE, MetricRecord)
        if evaluation is not None and self._pending is not None:  # kept even if the update is not
            if _averageable(self._pending["round"], node, evaluation):
                tally.evaluations.append((node, evaluation))
        try:
            record, metric_record, weight, size = self._check(msg)
        except ValueError as err:
            log.warning("round %d: rejected update from node %d: %s", rnd, node, err)
            tally.rejected += 1
            return
        data = _get(msg.content, keys.DATA, ConfigRecord) or ConfigRecord()
        tally.tags[node] = list(data.get(keys.EPISODE_TAGS, []))  # of valid updates: those that are averaged
        tally.mean.add(self._decoded(record), weight)
        tally.metrics.append(RecordDict({"metrics": metric_record}))
        tally.clients.append(
            {
                "node-id": node,
                "param-names-sha256": names_digest(record),
                "num-arrays": len(record),
                "payload-bytes": size,
                "train-episodes": data.get(keys.EPISODES),
                **dict(metric_record),
            }
        )

    def _warn_shared(self, rnd: int, tags: dict[int, list[str]]) -> None:
        shared = shared_episodes(tags)
        self._round["shared-episodes"] = [{"nodes": [a, b], "episodes": n} for a, b, n in shared]
        for a, b, n in shared:
            log.warning(
                "round %d: nodes %d and %d train on %d identical episode(s) (of %d and %d): "
                "duplicated recordings weigh twice in the average",
                rnd,
                a,
                b,
                n,
                len(tags[a]),
                len(tags[b]),
            )

    def _checkpoint(self, rnd: int, tensors: dict[str, torch.Tensor], encoded: ArrayRecord) -> None:
        """Save ``tensors`` (``encoded`` is their float32 ArrayRecord, whose digest is recorded)."""
        metadata = {
            "round": rnd,
            "target": self.target,
            "run-id": self.run_id,
            "digest": digest(encoded),
            "run-config": json.dumps(self.cfg.to_run_config(), sort_keys=True),
        }
        checkpoints.save_global(self.out_dir, tensors, metadata)
        self._round["digest"] = metadata["digest"]
        final = rnd == self.target
        if checkpoints.saved_round(rnd, self.cfg.checkpoint_every, final=final):
            self._save_round(rnd, tensors, metadata)
            if hub.should_push(self.cfg.hub_repo_id, rnd, checkpoint_every=self.cfg.checkpoint_every, final=final):
                self._push(rnd)

    def _save_round(self, rnd: int, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """A LeRobot-loadable checkpoint of this round, and ``checkpoints/latest`` pointing at it."""
        from zk0.export import save_policy_dir

        path = checkpoints.round_dir(self.out_dir, rnd)
        try:
            if path.exists():
                shutil.rmtree(path)  # the round was trained again after a crash
            save_policy_dir(self.cfg, tensors, path, stats=None, metadata=metadata)
            checkpoints.point_latest(self.out_dir, rnd)
        except OSError as err:  # training goes on: global.safetensors holds the model
            log.error("round %d: could not save the checkpoint %s: %s", rnd, path, err)
            return
        self._round["checkpoint"] = str(path)
        log.info("round %d: saved %s (LeRobot layout; zk0bot export adds your dataset's stats)", rnd, path)

    def _evaluate_on_server(self, rnd: int) -> dict[str, float] | None:
        """The global model just evaluated by the nodes, on the server's own dataset (all episodes)."""
        from zk0.config import NodeConfig
        from zk0.node import evaluate_node, open_node

        try:
            # No loader worker processes: the ServerApp runs threads, and fork() with threads can deadlock.
            where = NodeConfig(dataset_uri=self.cfg.eval_dataset_uri, num_workers=0)
            node = open_node(self.cfg, where, self._global, "all")
            metrics = evaluate_node(node)
        except Exception as err:  # noqa: BLE001 - the federation's rounds go on without this number
            log.error("round %d: server-side evaluation failed: %s", rnd, err)
            return None
        log.info("round %d: server-side evaluation %s", rnd, metrics)
        return metrics

    def _push(self, rnd: int) -> None:
        try:
            url = hub.push(checkpoints.round_dir(self.out_dir, rnd), self.cfg.hub_repo_id, rnd)
        except hub.HubPushError as err:  # training goes on; the checkpoint is on disk
            log.error("round %d: %s", rnd, err)
            return
        self._round["hub-commit"] = url
        log.info("round %d: pushed to the hub: %s", rnd, url)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        self._round["seconds"] = round(time.time() - self._round.pop("started", time.time()), 3)
        if self._round is self._pending:
            return None  # written when the next round's nodes have evaluated this model
        rnd = self._round["round"]
        evaluations: list[tuple[int, MetricRecord]] = []
        for m in replies:
            if m.has_error():
                log.warning("round %d: node %d failed to evaluate: %s", rnd, m.metadata.src_node_id, m.error.reason)
            elif _averageable(rnd, m.metadata.src_node_id, record := _get(m.content, "metrics", MetricRecord)):
                evaluations.append((m.metadata.src_node_id, record))
        return self._close(self._round, evaluations if self._evaluated(rnd) else None)

    def _close(self, record: dict[str, Any], evaluations: list[tuple[int, MetricRecord]] | None) -> MetricRecord | None:
        """Write ``record``'s history line, with its model's evaluation when there was one (None: none was due)."""
        metrics = None
        if evaluations is not None:
            if evaluations:
                contents = [RecordDict({"metrics": m}) for _, m in evaluations]
                metrics = aggregate_metricrecords(contents, self.weighted_by_key)
            record["evaluate"] = dict(metrics) if metrics is not None else None
            record["eval-clients"] = [{"node-id": node, **dict(m)} for node, m in evaluations]
            if self.cfg.eval_dataset_uri:
                record["server-evaluate"] = self._evaluate_on_server(record["round"])
            log.info("round %d: evaluated on %d node(s): %s", record["round"], len(evaluations), record["evaluate"])
        record["run-id"] = self.run_id
        line = {k.replace("_", "-"): v for k, v in record.items()}
        checkpoints.append_history(self.out_dir, line)
        self.tracker.log_round(line)
        return metrics
