"""int8 update compression: what the client encodes is what the server rebuilds, to half a step per value."""

import struct

import pytest
import torch
from flwr.app import Array

from zk0.compression import STYPE_INT8_DELTA, decode_tensor, encode_update
from zk0.errors import PolicyError
from zk0.policy import to_arrays


def test_deltas_round_trip_within_half_a_quantisation_step():
    gen = torch.Generator().manual_seed(0)
    received = {"w": torch.randn(64, 32, generator=gen), "b": torch.randn(7, generator=gen)}
    trained = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in received.items()}

    record = encode_update(trained, received, "int8", "float32")

    for name, value in trained.items():
        array = record[name]
        assert (array.dtype, array.stype, len(array.data)) == ("int8", STYPE_INT8_DELTA, 4 + value.numel())
        step = (value - received[name]).abs().max().item() / 127
        error = (decode_tensor(name, array, received) - value).abs().max().item()
        assert 0 < error <= step / 2 * 1.001


def test_an_unchanged_tensor_is_sent_as_zeros_and_decodes_exactly():
    received = {"w": torch.ones(3, 2)}

    record = encode_update({"w": torch.ones(3, 2)}, received, "int8", "bfloat16")

    assert record["w"].data == struct.pack("<f", 0.0) + bytes(6)
    assert torch.equal(decode_tensor("w", record["w"], received), received["w"])


def test_no_compression_is_the_wire_dtype():
    tensors = {"w": torch.randn(4)}

    assert encode_update(tensors, tensors, "none", "bfloat16")["w"].data == to_arrays(tensors, "bfloat16")["w"].data


@pytest.mark.parametrize(
    ("data", "dtype", "name", "error"),
    [
        (struct.pack("<f", 0.1) + bytes(5), "int8", "w", "9 bytes for an int8 delta of shape"),
        (struct.pack("<f", float("nan")) + bytes(6), "int8", "w", "scale nan is not a finite non-negative"),
        (struct.pack("<f", -1.0) + bytes(6), "int8", "w", "scale -1.0 is not a finite non-negative"),
        (struct.pack("<f", 0.1) + bytes(6), "int16", "w", "must be int8 and name a parameter"),
        (struct.pack("<f", 0.1) + bytes(6), "int8", "other", "must be int8 and name a parameter"),
    ],
)
def test_malformed_deltas_are_refused(data, dtype, name, error):
    array = Array(dtype=dtype, shape=(6,), stype=STYPE_INT8_DELTA, data=data)

    with pytest.raises(PolicyError, match=error):
        decode_tensor(name, array, {"w": torch.zeros(6)})
