"""Packing a record's arrays into few Flower arrays: lossless, bounded buckets, malformed input refused."""

import json
import struct

import pytest
import torch
from flwr.app import Array, ArrayRecord
from flwr.common.serde import array_record_from_proto, array_record_to_proto

from zk0.compression import encode_update
from zk0.errors import PolicyError
from zk0.integrity import digest
from zk0.packing import STYPE_PACKED, drain, pack, unpack
from zk0.policy import to_arrays


def record(sizes: dict[str, int]) -> ArrayRecord:
    """float32 arrays of the given element counts, with distinct values."""
    tensors = {name: torch.arange(n, dtype=torch.float32) + i for i, (name, n) in enumerate(sizes.items())}
    return to_arrays(tensors, "float32")


def test_pack_and_unpack_give_back_the_same_arrays_through_protobuf():
    original = record({"b.weight": 6, "a.bias": 3, "empty": 0})
    original["int8"] = encode_update({"int8": torch.ones(2, 2)}, {"int8": torch.zeros(2, 2)}, "int8", "float32")["int8"]

    packed = pack(original.items())
    wire = array_record_from_proto(array_record_to_proto(packed))  # as Flower serialises it
    back = unpack(wire)

    assert list(packed) == ["packed-00000"] and packed["packed-00000"].stype == STYPE_PACKED
    assert list(back) == list(original)  # order kept
    for name, array in original.items():
        got = back[name]
        assert (got.dtype, got.shape, got.stype, got.data) == (array.dtype, tuple(array.shape), array.stype, array.data)
    assert digest(back) == digest(original)
    assert len(wire) == 0  # the buckets were taken out as they were read


def test_buckets_hold_at_most_the_limit_and_a_larger_tensor_travels_alone():
    # 40-byte, 40-byte, 400-byte, 40-byte arrays with a 100-byte limit: [a, b], [big], [c].
    original = record({"a": 10, "b": 10, "big": 100, "c": 10})

    packed = pack(original.items(), bucket_bytes=100)

    assert list(packed) == ["packed-00000", "packed-00001", "packed-00002"]
    names = [[e[0] for e in _header(packed[k])] for k in packed]
    assert names == [["a", "b"], ["big"], ["c"]]
    assert list(unpack(packed)) == ["a", "b", "big", "c"]


def test_pack_reads_an_iterator_one_pair_at_a_time():
    made = []

    def arrays():
        for name, array in record({"a": 10, "b": 10, "c": 10}).items():
            made.append(name)
            yield name, array

    packed = pack(arrays(), bucket_bytes=80)

    assert made == ["a", "b", "c"] and len(packed) == 2


def test_drain_packs_a_record_while_emptying_it():
    original = record({"a": 10, "b": 10})
    copy = ArrayRecord(dict(original.items()))

    packed = pack(drain(copy), bucket_bytes=40)

    assert len(copy) == 0 and len(packed) == 2
    assert digest(unpack(packed)) == digest(original)


def test_an_empty_record_packs_to_nothing_and_back():
    assert len(pack(ArrayRecord().items())) == 0 and len(unpack(ArrayRecord())) == 0


def _header(bucket: Array) -> list:
    (size,) = struct.unpack_from("<I", bucket.data)
    return json.loads(bucket.data[4 : 4 + size])


def _raw(data: bytes) -> ArrayRecord:
    return ArrayRecord({"packed-00000": Array(dtype="uint8", shape=(len(data),), stype=STYPE_PACKED, data=data)})


def _bucket(header: object, payload: bytes = b"", raw_header: bytes | None = None) -> ArrayRecord:
    text = json.dumps(header).encode() if raw_header is None else raw_header
    return _raw(struct.pack("<I", len(text)) + text + payload)


@pytest.mark.parametrize(
    ("packed", "reason"),
    [
        (record({"w": 2}), "array w: expected a zk0.packed array"),
        (_raw(b"\x01\x00"), "truncated"),
        (_raw(b"\xff" * 4 + b"[]"), "truncated"),  # claims a 4 GiB header
        (_bucket([], raw_header=b"[not json"), "malformed header"),
        (_bucket({"w": 1}), "malformed header"),
        (_bucket([], raw_header=b"[" * 200_000), "malformed header"),  # nested too deep for Python's JSON parser
        (_bucket([["w", "float32", "zk0.raw", [2]]]), "is not [name, dtype, stype, shape, nbytes]"),
        (_bucket([["w", "float32", "zk0.raw", [-2], 8]], bytes(8)), "non-negative integers"),
        (_bucket([["w", "float32", "zk0.raw", [2], True]], bytes(1)), "byte count True"),
        (_bucket([[1, "float32", "zk0.raw", [2], 8]], bytes(8)), "must be strings"),
        (_bucket([["w", "float32", "zk0.raw", [2], 8]], bytes(7)), "7 bytes of data, its header lists 8"),
        (_bucket([["w", "float32", "zk0.raw", [2], 8]] * 2, bytes(16)), "parameter 'w' appears twice"),
    ],
)
def test_malformed_packed_arrays_are_refused_with_the_reason(packed, reason):
    with pytest.raises(PolicyError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        unpack(packed)
