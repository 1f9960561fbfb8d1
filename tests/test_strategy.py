"""Zk0Strategy on real Flower Messages: sample-weighted float32 mean, bad updates excluded, history."""

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from zk0 import checkpoints
from zk0.config import RunConfig
from zk0.integrity import digest
from zk0.packing import pack, unpack
from zk0.policy import from_arrays, to_arrays
from zk0.strategy import Zk0Strategy, names_digest, weighted_mean

pytestmark = pytest.mark.usefixtures("task_identity")


class TwoNodeGrid:
    """The one Grid call sampling makes: which nodes are online."""

    def get_node_ids(self):
        return [5, 6]


# The toy tensors below fit no real model: no LeRobot-layout checkpoints in these tests (test_rounds has them).
TOY = {"checkpoint-every": 0}
GLOBAL = {"a.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b.bias": torch.tensor([0.5, -0.5, 1.0])}


def reply(
    node: int,
    tensors: dict,
    num_examples: int,
    wire: str = "float32",
    claim: str | None = None,
    arrays: ArrayRecord | None = None,
) -> Message:
    """A client's train reply as zk0's ClientApp makes it, packed; ``claim`` overrides the digest it reports.

    ``arrays`` replaces ``tensors`` in the wire dtype as the reply's (unpacked) update.
    """
    ins = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    arrays = to_arrays(tensors, wire) if arrays is None else arrays
    content = RecordDict(
        {
            "arrays": pack(arrays.items()),
            "metrics": MetricRecord({"num-examples": num_examples, "train-loss": 1.0}),
            "integrity": ConfigRecord({"arrays-digest": claim or digest(arrays)}),
        }
    )
    return Message(content=content, reply_to=ins)


def wire_bytes(record: ArrayRecord) -> int:
    """Bytes of ``record`` as it travels: packed, headers included."""
    return sum(len(a.data) for a in pack(record.items()).values())


def opened(packed: ArrayRecord) -> ArrayRecord:
    """The unpacked arrays of a packed record, which is left as it was (unpack empties what it reads)."""
    return unpack(ArrayRecord(dict(packed.items())))


@pytest.fixture
def strategy(tiny_run_config, tmp_path):
    cfg = RunConfig.from_run_config(
        tiny_run_config | TOY | {"wire-dtype": "bfloat16", "proximal-mu": 0.01, "min-clients": 1}
    )
    s = Zk0Strategy(cfg, tmp_path, run_id=42)
    s._encode(to_arrays(GLOBAL, "float32"), ConfigRecord())  # what configure_train does with the global model
    s._round = {"round": 1}
    return s


def test_weighted_mean_matches_a_hand_computation():
    x = {"w": torch.tensor([0.0, 3.0])}
    y = {"w": torch.tensor([3.0, 0.0])}

    out = weighted_mean([(x, 1.0), (y, 2.0)])

    assert torch.allclose(out["w"], torch.tensor([2.0, 1.0]))


def test_aggregation_is_sample_weighted_in_float32_and_checkpointed(strategy, tmp_path):
    u1 = {k: v + 1.0 for k, v in GLOBAL.items()}
    u2 = {k: v * 3.0 for k, v in GLOBAL.items()}

    arrays, metrics = strategy.aggregate_train(1, [reply(7, u1, 30, "bfloat16"), reply(8, u2, 10, "bfloat16")])

    # Computed independently: (30 * u1 + 10 * u2) / 40, with inputs exactly representable in bf16.
    expected = {k: (30 * u1[k] + 10 * u2[k]) / 40 for k in GLOBAL}
    got = from_arrays(arrays)
    assert {a.dtype for a in arrays.values()} == {"float32"}
    assert all(torch.allclose(got[k], expected[k]) for k in GLOBAL)
    saved, meta = checkpoints.load_global(tmp_path)
    assert all(torch.equal(saved[k], got[k]) for k in GLOBAL) and meta["round"] == "1"
    assert metrics["train-loss"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"a.weight": torch.full((2, 2), float("nan")), "b.bias": GLOBAL["b.bias"]}, "non-finite"),
        ({"a.weight": torch.zeros(4), "b.bias": GLOBAL["b.bias"]}, "shape"),
        (GLOBAL | {"extra.weight": torch.zeros(1)}, "extra"),
        ({"a.weight": GLOBAL["a.weight"]}, "missing"),
    ],
)
def test_bad_updates_are_excluded_and_logged(strategy, bad, reason, caplog):
    good = {k: v + 1.0 for k, v in GLOBAL.items()}

    arrays, _ = strategy.aggregate_train(1, [reply(7, good, 5), reply(9, bad, 1000)])

    got = from_arrays(arrays)
    assert all(torch.equal(got[k], good[k]) for k in GLOBAL)
    assert strategy._round["accepted"] == 1 and strategy._round["rejected"] == 1
    assert "rejected update from node 9" in caplog.text and reason in caplog.text


def test_error_replies_and_zero_weights_leave_the_model_unchanged(strategy):
    ins = Message(content=RecordDict(), dst_node_id=3, message_type="train")
    failed = Message(Error(code=1, reason="dataset vanished"), reply_to=ins)

    arrays, metrics = strategy.aggregate_train(1, [failed, reply(4, GLOBAL, 0)])

    assert arrays is None and metrics is None
    assert strategy._round["rejected"] == 2


def test_fewer_valid_updates_than_min_clients_keep_the_model_and_still_count_the_round(
    tiny_run_config, tmp_path, caplog
):
    cfg = RunConfig.from_run_config(tiny_run_config | TOY | {"min-clients": 2})
    s = Zk0Strategy(cfg, tmp_path, run_id=1)
    s._encode(to_arrays(GLOBAL, "float32"), ConfigRecord())
    s._round = {"round": 1}
    nan = {"a.weight": torch.full((2, 2), float("nan")), "b.bias": GLOBAL["b.bias"]}

    arrays, metrics = s.aggregate_train(1, [reply(7, {k: v + 1.0 for k, v in GLOBAL.items()}, 5), reply(8, nan, 5)])

    assert arrays is None and metrics is None  # Flower keeps the previous global model
    assert "1 valid update(s), fewer than min-clients 2" in caplog.text
    saved, meta = checkpoints.load_global(tmp_path)
    assert all(torch.equal(saved[k], GLOBAL[k]) for k in GLOBAL) and meta["round"] == "1"
    assert meta["digest"] == digest(to_arrays(GLOBAL, "float32"))


def test_history_line_records_clients_names_digest_and_bytes(strategy, tmp_path):
    strategy.aggregate_train(1, [reply(7, GLOBAL, 4, "bfloat16")])
    strategy.aggregate_evaluate(1, [])

    (line,) = checkpoints.read_history(tmp_path)
    (client,) = line["clients"]
    assert line["round"] == 1 and line["run-id"] == 42 and line["accepted"] == 1
    assert client["param-names-sha256"] == names_digest(GLOBAL)
    sent = to_arrays(GLOBAL, "bfloat16")
    assert sum(len(a.data) for a in sent.values()) == 2 * (4 + 3)  # seven bfloat16 values
    assert client["payload-bytes"] == wire_bytes(sent) == line["bytes-received"]
    assert client["num-arrays"] == 2
    json.dumps(line)


def test_configure_sends_the_wire_dtype_and_round_settings(strategy):
    messages = list(strategy.configure_train(2, to_arrays(GLOBAL, "float32"), ConfigRecord(), TwoNodeGrid()))

    assert sorted(m.metadata.dst_node_id for m in messages) == [5, 6]
    content = messages[0].content
    assert list(content["arrays"]) == ["packed-00000"]  # both tensors in one array on the wire
    assert strategy._round["bytes-sent"] == 2 * wire_bytes(to_arrays(GLOBAL, "bfloat16"))  # two nodes
    arrays = opened(content["arrays"])
    assert {a.dtype for a in arrays.values()} == {"bfloat16"}
    assert dict(content["config"]) == {
        "proximal-mu": 0.01,
        "learning-rate": 1e-4,
        "server-round": 2,
        "arrays-digest": digest(arrays),
        "data-key": checkpoints.federation_key(strategy.out_dir).hex(),
        "evaluate-first": False,
    }


def test_rounds_continue_from_earlier_sessions(tiny_run_config, tmp_path):
    cfg = RunConfig.from_run_config(tiny_run_config | TOY | {"num-server-rounds": 3})
    s = Zk0Strategy(cfg, tmp_path, run_id=9, rounds_done=4, target=6)

    messages = list(s.configure_train(1, to_arrays(GLOBAL, "float32"), ConfigRecord(), TwoNodeGrid()))
    s.aggregate_train(1, [reply(5, GLOBAL, 4)])
    s.aggregate_evaluate(1, [])

    assert messages[0].content["config"]["server-round"] == 5
    assert checkpoints.read_history(tmp_path)[-1]["round"] == 5
    meta = checkpoints.load_global(tmp_path)[1]
    assert {k: meta[k] for k in ("round", "target", "run-id")} == {"round": "5", "target": "6", "run-id": "9"}
    # The run settings travel with the checkpoint, so it can be exported without the server's config.
    assert RunConfig.from_run_config(json.loads(meta["run-config"])) == cfg


def test_a_reply_whose_digest_does_not_match_its_arrays_is_rejected(strategy, caplog):
    good = {k: v + 1.0 for k, v in GLOBAL.items()}
    forged = reply(9, {k: v * 100 for k, v in GLOBAL.items()}, 1000, claim=digest(to_arrays(good, "float32")))

    arrays, _ = strategy.aggregate_train(1, [reply(7, good, 5), forged])

    assert all(torch.equal(from_arrays(arrays)[k], good[k]) for k in GLOBAL)
    assert "rejected update from node 9: digest mismatch" in caplog.text


def test_updates_beyond_max_update_norm_are_rejected(tiny_run_config, tmp_path, caplog):
    cfg = RunConfig.from_run_config(tiny_run_config | TOY | {"max-update-norm": 1.0, "min-clients": 1})
    s = Zk0Strategy(cfg, tmp_path)
    s._encode(to_arrays(GLOBAL, "float32"), ConfigRecord())
    s._round = {"round": 1}
    near = {k: v + 0.1 for k, v in GLOBAL.items()}  # norm sqrt(7) * 0.1 = 0.26
    far = {k: v + 10.0 for k, v in GLOBAL.items()}  # norm sqrt(7) * 10 = 26.5

    arrays, _ = s.aggregate_train(1, [reply(7, near, 5), reply(8, far, 5)])

    assert all(torch.allclose(from_arrays(arrays)[k], near[k]) for k in GLOBAL)
    assert "update norm 26.46 exceeds max-update-norm 1" in caplog.text


def test_federation_key_is_made_once_and_private(tmp_path):
    key = checkpoints.federation_key(tmp_path)

    assert len(key) == 32 and checkpoints.federation_key(tmp_path) == key
    assert (tmp_path / checkpoints.KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_int8_deltas_are_rebuilt_from_the_model_the_nodes_received(tiny_run_config, tmp_path):
    from zk0.compression import encode_update

    cfg = RunConfig.from_run_config(
        tiny_run_config | TOY | {"wire-dtype": "bfloat16", "update-compression": "int8", "min-clients": 1}
    )
    s = Zk0Strategy(cfg, tmp_path)
    sent = s._encode(to_arrays(GLOBAL, "float32"), ConfigRecord())
    s._round = {"round": 1}
    received = from_arrays(unpack(sent))  # bfloat16-rounded: 1/3-style values differ from the float32 global
    trained = {k: v + 0.25 for k, v in received.items()}
    update = encode_update(trained, received, "int8", "bfloat16")
    assert sum(len(a.data) for a in update.values()) == (4 + 3) + 4 * 2  # a byte a value, a float32 scale a tensor

    arrays, _ = s.aggregate_train(1, [reply(7, GLOBAL, 4, arrays=update)])

    assert all(torch.allclose(from_arrays(arrays)[k], trained[k], atol=1e-6) for k in GLOBAL)
    assert s._round["clients"][0]["payload-bytes"] == wire_bytes(update)


def test_a_malformed_int8_delta_is_rejected(strategy, caplog):
    from flwr.app import Array

    arrays = to_arrays(GLOBAL, "float32")
    arrays["b.bias"] = Array(dtype="int8", shape=(3,), stype="zk0.int8-delta", data=b"\x00\x00\xc0\x7f" + bytes(3))

    strategy.aggregate_train(1, [reply(7, GLOBAL, 4), reply(8, GLOBAL, 4, arrays=arrays)])

    assert "rejected update from node 8: array b.bias: int8 delta scale nan" in caplog.text


def test_a_reply_that_is_not_packed_or_is_cut_short_is_rejected(strategy, caplog):
    plain = reply(8, GLOBAL, 4)
    plain.content["arrays"] = to_arrays(GLOBAL, "float32")  # one array per tensor, as before packing
    cut = reply(9, GLOBAL, 4)
    bucket = cut.content["arrays"]["packed-00000"]
    bucket.data, bucket.shape = bucket.data[:-4], (len(bucket.data) - 4,)  # the last float lost on the way

    strategy.aggregate_train(1, [reply(7, GLOBAL, 4), plain, cut])

    assert strategy._round["accepted"] == 1 and strategy._round["rejected"] == 2
    assert "rejected update from node 8: array a.weight: expected a zk0.packed array" in caplog.text
    assert "rejected update from node 9: packed array packed-00000: " in caplog.text
    assert "bytes of data, its header lists" in caplog.text


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"train-loss": 1.0}, "'num-examples' must be a positive number, got None"),
        ({"num-examples": float("nan")}, "'num-examples' must be a positive number, got nan"),
        ({"num-examples": 4, "train-loss": [1.0, 2.0]}, "metric 'train-loss' must be a number"),
    ],
)
def test_train_metrics_that_cannot_be_averaged_reject_the_update(strategy, metrics, reason, caplog):
    bad = reply(9, GLOBAL, 4)
    bad.content["metrics"] = MetricRecord(metrics)

    arrays, train_metrics = strategy.aggregate_train(1, [reply(7, GLOBAL, 4), bad])

    assert arrays is not None and train_metrics["train-loss"] == pytest.approx(1.0)
    assert strategy._round["accepted"] == 1 and strategy._round["rejected"] == 1
    assert f"rejected update from node 9: {reason}" in caplog.text


def evaluated(node: int, tensors: dict, num_examples: int, eval_loss: float) -> Message:
    """A train reply that also carries the node's evaluation of the model it received (evaluate-first)."""
    msg = reply(node, tensors, num_examples)
    msg.content["start-evaluate"] = MetricRecord({"num-examples": 10 * node, "eval-loss": eval_loss})
    return msg


def test_evaluation_rides_on_the_next_rounds_train_messages(tiny_run_config, tmp_path):
    cfg = RunConfig.from_run_config(tiny_run_config | TOY | {"num-server-rounds": 3, "fraction-evaluate": 1.0})
    s = Zk0Strategy(cfg, tmp_path)
    s._pending = {"round": 0, "start-digest": "d0"}  # what start() sets for a new federation
    model = to_arrays(GLOBAL, "float32")

    first = list(s.configure_train(1, model, ConfigRecord(), TwoNodeGrid()))
    assert first[0].content["config"]["evaluate-first"] is True
    arrays, _ = s.aggregate_train(1, [evaluated(5, GLOBAL, 4, 2.0), evaluated(6, GLOBAL, 4, 5.0)])
    assert list(s.configure_evaluate(1, arrays, ConfigRecord(), TwoNodeGrid())) == []  # round 2's nodes will
    s.aggregate_evaluate(1, [])
    second = list(s.configure_train(2, arrays, ConfigRecord(), TwoNodeGrid()))
    assert second[0].content["config"]["evaluate-first"] is True
    s.aggregate_train(2, [evaluated(5, GLOBAL, 4, 1.0), evaluated(6, GLOBAL, 4, 4.0)])
    assert list(s.configure_evaluate(2, arrays, ConfigRecord(), TwoNodeGrid())) == []

    lines = checkpoints.read_history(tmp_path)
    assert [line["round"] for line in lines] == [0, 1]  # round 2's line waits for round 3's replies
    # Weighted by the held-out samples each node evaluated: (50 * 2 + 60 * 5) / 110 and (50 * 1 + 60 * 4) / 110.
    assert lines[0]["evaluate"]["eval-loss"] == pytest.approx(400 / 110) and "train" not in lines[0]
    assert lines[1]["evaluate"]["eval-loss"] == pytest.approx(290 / 110) and lines[1]["accepted"] == 2
    assert [c["node-id"] for c in lines[1]["eval-clients"]] == [5, 6]


def test_a_start_evaluation_that_cannot_be_averaged_is_ignored_and_the_update_still_counts(
    tiny_run_config, tmp_path, caplog
):
    cfg = RunConfig.from_run_config(tiny_run_config | TOY | {"num-server-rounds": 3, "fraction-evaluate": 1.0})
    s = Zk0Strategy(cfg, tmp_path)
    s._pending = {"round": 0, "start-digest": "d0"}
    no_weight = evaluated(6, GLOBAL, 4, 9.0)
    no_weight.content["start-evaluate"] = MetricRecord({"eval-loss": 9.0})  # no num-examples

    list(s.configure_train(1, to_arrays(GLOBAL, "float32"), ConfigRecord(), TwoNodeGrid()))
    arrays, _ = s.aggregate_train(1, [evaluated(5, GLOBAL, 4, 2.0), no_weight])

    assert arrays is not None and s._round["accepted"] == 2
    (line,) = checkpoints.read_history(tmp_path)
    assert line["round"] == 0 and line["evaluate"]["eval-loss"] == pytest.approx(2.0)  # node 5's alone
    assert [c["node-id"] for c in line["eval-clients"]] == [5]
    assert "round 0: ignored the evaluation from node 6: 'num-examples' must be a positive number" in caplog.text


def test_evaluate_replies_that_cannot_be_averaged_are_ignored(strategy, tmp_path, caplog):
    def answer(node: int, content: RecordDict) -> Message:
        return Message(content, reply_to=Message(content=RecordDict(), dst_node_id=node, message_type="evaluate"))

    good = answer(5, RecordDict({"metrics": MetricRecord({"num-examples": 3, "eval-loss": 2.0})}))
    listed = answer(6, RecordDict({"metrics": MetricRecord({"num-examples": 3, "eval-loss": [1.0]})}))
    empty = answer(7, RecordDict())

    metrics = strategy.aggregate_evaluate(1, [good, listed, empty])

    assert metrics["eval-loss"] == pytest.approx(2.0)
    (line,) = checkpoints.read_history(tmp_path)
    assert [c["node-id"] for c in line["eval-clients"]] == [5]
    assert "round 1: ignored the evaluation from node 6: metric 'eval-loss' must be a number" in caplog.text
    assert "round 1: ignored the evaluation from node 7: expected a MetricRecord 'metrics'" in caplog.text
