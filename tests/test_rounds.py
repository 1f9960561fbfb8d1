"""Whole rounds through zk0's strategy and the real ClientApp handlers, with bad nodes among good ones.

The grid below stands in for Flower's transport only: every message is
serialised to protobuf and back, as on the wire, and delivered to zk0's
``@app.train`` handler in this process. A node may be "bad": its real reply is
tampered with on the way back, the way a faulty or hostile client would send it.
"""

import shutil

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto

from zk0 import checkpoints
from zk0 import config as keys
from zk0.client_app import evaluate_handler, train_handler
from zk0.config import RunConfig
from zk0.datasets import split_episodes
from zk0.integrity import digest
from zk0.packing import pack, unpack
from zk0.policy import build_policy, from_arrays, to_arrays, trainable_state
from zk0.strategy import Zk0Strategy, weighted_mean

pytestmark = pytest.mark.usefixtures("task_identity")


def _redigest(content: RecordDict) -> None:
    content[keys.INTEGRITY] = ConfigRecord({keys.ARRAYS_DIGEST: digest(content["arrays"])})


def _map(content: RecordDict, fn) -> None:
    """Apply ``fn`` to every decoded tensor of the reply and re-sign it, as a client that means it would."""
    tensors = {k: fn(v) for k, v in from_arrays(content["arrays"]).items()}
    content["arrays"] = to_arrays(tensors, "float32")
    _redigest(content)


def nan(content):
    _map(content, lambda t: torch.full_like(t, float("nan")))


def blow_up(content):
    _map(content, lambda t: t + 100.0)


def wrong_shape(content):
    arrays = content["arrays"]
    name = sorted(arrays)[0]
    arrays[name] = to_arrays({name: torch.zeros(3)}, "float32")[name]
    _redigest(content)


def extra_key(content):
    content["arrays"]["extra.weight"] = to_arrays({"extra.weight": torch.zeros(3)}, "float32")["extra.weight"]
    _redigest(content)


def digest_mismatch(content):
    arrays = content["arrays"]
    name = sorted(arrays)[0]
    values = from_arrays(ArrayRecord({name: arrays[name]}))[name]
    arrays[name] = to_arrays({name: values + 1.0}, "float32")[name]  # the claimed digest is left as it was


class InProcessGrid:
    """Delivers each message to the real ClientApp handler of its node, through protobuf both ways.

    Like Flower's grids it has ``push_messages`` and ``pull_messages``, which
    zk0's StreamingGrid uses; a message is handled when its reply is pulled.
    """

    def __init__(self, run_config: dict, datasets: dict[int, str]) -> None:
        self.run_config = run_config
        self.datasets = datasets
        self.tamper: dict[int, object] = {}
        self.wire: list[bytes] = []  # every message as serialised
        self.honest: dict[int, dict] = {}  # the untampered update of each node
        self.outbox: dict[str, Message] = {}
        self.delivered: list[str] = []  # the type of every message handled, in order

    def get_node_ids(self):
        return sorted(self.datasets)

    def _over_the_wire(self, msg: Message) -> Message:
        data = message_to_proto(msg).SerializeToString()
        self.wire.append(data)
        proto = type(message_to_proto(msg))()
        proto.ParseFromString(data)
        return message_from_proto(proto)

    def push_messages(self, messages):
        ids = [f"message-{len(self.wire) + i}" for i in range(len(messages))]
        self.outbox |= {mid: self._over_the_wire(msg) for mid, msg in zip(ids, messages, strict=True)}
        return ids

    def pull_messages(self, message_ids):
        return [self._handle(self.outbox.pop(mid)) for mid in message_ids if mid in self.outbox]

    def _handle(self, msg: Message) -> Message:
        self.delivered.append(msg.metadata.message_type)
        node = msg.metadata.dst_node_id
        ctx = Context(
            run_id=1,
            node_id=node,
            node_config={"dataset-uri": f"local:{self.datasets[node]}", "num-workers": 0},
            state=RecordDict(),
            run_config=self.run_config,
        )
        if msg.metadata.message_type.startswith("evaluate"):
            return self._over_the_wire(evaluate_handler(msg, ctx))
        reply = train_handler(msg, ctx)
        reply.content["arrays"] = unpack(reply.content["arrays"])  # tampered with as named arrays, then packed again
        self.honest[node] = from_arrays(reply.content["arrays"])
        if node in self.tamper:
            self.tamper[node](reply.content)
        reply.content["arrays"] = pack(reply.content["arrays"].items())
        return self._over_the_wire(reply)


GOOD = (1, 2, 3)
BAD = {4: nan, 5: wrong_shape, 6: extra_key, 7: digest_mismatch, 8: blow_up}


@pytest.fixture
def federation(kit, tiny_run_config, tmp_path):
    copy = tmp_path / "copy-of-client-0"
    shutil.copytree(kit.datasets[0], copy)  # node 2 trains on a copy of node 1's recordings
    datasets = {1: kit.datasets[0], 2: copy, 3: kit.datasets[1]} | {n: kit.datasets[1] for n in BAD}
    run_config = tiny_run_config | {
        "local-steps": 1,
        "min-clients": 3,
        "fraction-evaluate": 0.0,
        "max-update-norm": 50.0,
    }
    return InProcessGrid(run_config, datasets), RunConfig.from_run_config(run_config)


def test_bad_updates_are_excluded_duplicates_flagged_and_nothing_names_a_dataset(federation, kit, tmp_path, zk0_log):
    grid, cfg = federation
    grid.tamper = dict(BAD)
    out = tmp_path / "server"
    initial = to_arrays(trainable_state(build_policy(cfg)), "float32")
    strategy = Zk0Strategy(cfg, out, run_id=1)

    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=1, timeout=60)

    # The global model is the sample-weighted mean of the three honest updates, nothing else.
    (line,) = checkpoints.read_history(out)
    weights = {c["node-id"]: c["num-examples"] for c in line["clients"]}
    assert sorted(weights) == list(GOOD) and line["accepted"] == 3 and line["rejected"] == len(BAD)
    expected = weighted_mean([(grid.honest[n], float(weights[n])) for n in GOOD])
    got = from_arrays(result.arrays)
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in expected)
    saved, meta = checkpoints.load_global(out)
    assert meta["round"] == "1" and meta["digest"] == digest(to_arrays(saved, "float32"))
    # Each bad update is named in the log with its node and why.
    for node, reason in {
        4: "non-finite",
        5: "shape",
        6: "extra ['extra.weight']",
        7: "digest mismatch",
        8: "exceeds max-update-norm 50",
    }.items():
        assert f"rejected update from node {node}: " in zk0_log.text
        assert any(f"node {node}: " in r.message and reason in r.message for r in zk0_log.records), reason
    # Nodes 1 and 2 train on the same recordings: flagged; node 3's differ.
    (pair,) = line["shared-episodes"]
    train_episodes = len(split_episodes(4, cfg.eval_fraction, cfg.seed)[0])  # the kit has 4 episodes a node
    assert pair["nodes"] == [1, 2] and pair["episodes"] == train_episodes
    assert {c["node-id"]: c["train-episodes"] for c in line["clients"]} == dict.fromkeys(GOOD, train_episodes)
    assert "nodes 1 and 2 train on" in zk0_log.text
    # The wire carried no dataset name, path or URI, only counts and keyed tags.
    for secret in (str(kit.datasets[0]), str(kit.datasets[1]), "client-0", "client-1", "copy-of", "local:"):
        assert all(secret.encode() not in message for message in grid.wire), secret


def test_a_round_with_too_few_valid_updates_keeps_the_global_model(federation, tmp_path, zk0_log):
    grid, cfg = federation
    grid.datasets = {n: grid.datasets[n] for n in GOOD}
    out = tmp_path / "server"
    initial = to_arrays(trainable_state(build_policy(cfg)), "float32")
    strategy = Zk0Strategy(cfg, out, run_id=1)

    grid.tamper = {3: nan}  # two valid updates, min-clients is 3
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=1, timeout=60)

    assert len(result.arrays) == 0  # no round produced a new global model
    assert "2 valid update(s), fewer than min-clients 3" in zk0_log.text
    saved, meta = checkpoints.load_global(out)
    assert meta["round"] == "1" and meta["digest"] == digest(initial)
    (line,) = checkpoints.read_history(out)
    assert line["accepted"] == 2 and line["rejected"] == 1 and "train" not in line


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """wandb on, writing its run files locally; its per-process service set up and torn down here."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    wandb.teardown()
    yield
    wandb.teardown()


def test_round_0_baseline_eval_every_and_lerobot_checkpoints_every_n_rounds(
    federation, tmp_path, wandb_offline, zk0_log
):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from zk0.export import find_checkpoint

    grid, _ = federation
    grid.datasets = {n: grid.datasets[n] for n in (1, 3)}
    grid.run_config |= {
        "min-clients": 2,
        "fraction-evaluate": 1.0,
        "eval-every": 2,
        "checkpoint-every": 2,
        "use-wandb": True,
        "hub-repo-id": "zk0-test/unreachable",  # the hub is offline here: the push fails, training goes on
        "eval-dataset-uri": f"local:{grid.datasets[3]}",  # the server's own evaluation set
    }
    cfg = RunConfig.from_run_config(grid.run_config | {"num-server-rounds": 3})
    out = tmp_path / "server"
    initial = to_arrays(trainable_state(build_policy(cfg)), "float32")

    Zk0Strategy(cfg, out, run_id=1).start(grid=grid, initial_arrays=initial, num_rounds=3, timeout=60)

    lines = {h["round"]: h for h in checkpoints.read_history(out)}
    assert sorted(lines) == [0, 1, 2, 3]
    # Round 0 evaluates the untrained model and trains nothing; then every 2nd round and the last.
    assert "train" not in lines[0] and lines[0]["start-digest"] == digest(initial)
    assert [r for r in lines if lines[r].get("evaluate")] == [0, 2, 3]
    # Each message carries the model: 2 nodes, once to train (and to evaluate the model they receive first,
    # round 0's and round 2's), once more to evaluate the last round's model.
    payload = sum(len(a.data) for a in pack(initial.items()).values())  # packed: the tensors' bytes and headers
    assert payload > sum(len(a.data) for a in initial.values())
    assert [lines[r].get("bytes-sent", 0) for r in range(4)] == [0, 2 * payload, 2 * payload, 4 * payload]
    assert grid.delivered.count("evaluate") == 2 and grid.delivered.count("train") == 6
    assert {c["node-id"] for c in lines[0]["eval-clients"]} == {1, 3}
    assert lines[0]["evaluate"]["eval-loss"] > 0 and lines[0]["evaluate"]["action-mse"] > 0
    # The server evaluates the same global models on its own dataset, on the same rounds.
    assert [r for r in lines if lines[r].get("server-evaluate")] == [0, 2, 3]
    assert lines[0]["server-evaluate"]["eval-loss"] > 0 and lines[0]["server-evaluate"]["num-examples"] > 0
    # LeRobot-layout checkpoints at rounds 2 and 3 (the last), and latest pointing at the newest.
    assert checkpoints.saved_rounds(out) == [2, 3]
    assert (out / "checkpoints" / "latest").resolve() == checkpoints.round_dir(out, 3)
    round_2 = find_checkpoint(out, "2")
    assert round_2.round == 2 and round_2.cfg == cfg
    assert digest(to_arrays(round_2.tensors, "float32")) == lines[2]["digest"]
    loaded = SmolVLAPolicy.from_pretrained(checkpoints.round_dir(out, 3))
    assert all(torch.equal(v, trainable_state(loaded)[k]) for k, v in find_checkpoint(out, "latest").tensors.items())
    # Each saved round was offered to the hub; offline, the failure is one logged line and nothing stops.
    assert zk0_log.text.count("to the hub repo zk0-test/unreachable failed") == 2
    assert list((out / "wandb").rglob("*.wandb")), "the wandb run was written offline"
