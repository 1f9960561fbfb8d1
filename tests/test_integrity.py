"""The canonical digest of parameter records, and the update norm."""

import hashlib

import torch
from flwr.app import Array, ArrayRecord

from zk0.integrity import digest
from zk0.policy import to_arrays


def test_digest_matches_a_hand_computation():
    record = ArrayRecord({"w": Array(dtype="float32", shape=(2,), stype="zk0.raw-le", data=b"\x00" * 8)})

    def field(b: bytes) -> bytes:
        return len(b).to_bytes(8, "little") + b

    expected = hashlib.sha256(field(b"w") + field(b"float32") + field(b"2") + field(b"\x00" * 8)).hexdigest()
    assert digest(record) == expected


def test_digest_ignores_insertion_order_and_sees_every_field():
    a, b = torch.arange(4.0), torch.ones(2, 3)
    base = digest(to_arrays({"a": a, "b": b}, "float32"))

    assert digest(to_arrays({"b": b, "a": a}, "float32")) == base
    variants = [
        {"a": a, "b": b.clone().index_fill_(1, torch.tensor([0]), 2.0)},  # one value
        {"a": a, "b": b.reshape(3, 2)},  # shape only
        {"a": a, "c": b},  # a name
    ]
    assert all(digest(to_arrays(v, "float32")) != base for v in variants)
    assert digest(to_arrays({"a": a, "b": b}, "bfloat16")) != base  # dtype
