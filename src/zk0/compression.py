"""Update compression: a client's trained parameters as int8 deltas to the global model it received.

With ``update-compression = "int8"`` each trained tensor travels as its delta
``d = trained - received`` quantised to int8 with one float32 scale per tensor
(``s = max|d| / 127``, ``q = round(d / s)``), a quarter of float32's bytes. The
server rebuilds ``received + s * q`` from the same decoded global model the
client started from, then checks and averages it like any update. Only the
client's reply is compressed; the global model goes out in the wire dtype.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

import torch
from flwr.app import Array, ArrayRecord

from zk0.config import UpdateCompression, WireDtype
from zk0.errors import PolicyError
from zk0.policy import decode_array, to_arrays

# Serialisation type of a compressed update: a little-endian float32 scale, then one int8 per value.
STYPE_INT8_DELTA = "zk0.int8-delta"
_SCALE = struct.Struct("<f")
_LEVELS = 127


def encode_update(
    trained: Mapping[str, torch.Tensor],
    received: Mapping[str, torch.Tensor],
    compression: UpdateCompression,
    wire_dtype: WireDtype,
) -> ArrayRecord:
    """The reply's ArrayRecord: ``trained`` in the wire dtype, or its int8 deltas to ``received``."""
    if compression == "none":
        return to_arrays(trained, wire_dtype)
    record = ArrayRecord()
    for name, value in trained.items():
        delta = value.detach().to("cpu", torch.float32) - received[name]
        peak = delta.abs().max().item() if delta.numel() else 0.0
        scale = _SCALE.unpack(_SCALE.pack(peak / _LEVELS))[0]  # the float32 the server will read
        if scale > 0:
            q = torch.round(delta / scale).clamp_(-_LEVELS, _LEVELS).to(torch.int8)
        else:
            q = torch.zeros(delta.shape, dtype=torch.int8)
        data = _SCALE.pack(scale) + q.reshape(-1).numpy().tobytes()
        record[name] = Array(dtype="int8", shape=tuple(delta.shape), stype=STYPE_INT8_DELTA, data=data)
    return record


def decode_tensor(name: str, array: Array, received: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One array of a reply as float32 trained values, whatever its encoding; raises PolicyError if malformed."""
    if array.stype != STYPE_INT8_DELTA:
        return decode_array(name, array)
    if array.dtype != "int8" or name not in received:
        raise PolicyError(f"array {name}: an int8 delta must be int8 and name a parameter of the global model")
    numel = math.prod(array.shape)
    if len(array.data) != _SCALE.size + numel:
        raise PolicyError(f"array {name}: {len(array.data)} bytes for an int8 delta of shape {tuple(array.shape)}")
    (scale,) = _SCALE.unpack_from(array.data)
    if not math.isfinite(scale) or scale < 0:
        raise PolicyError(f"array {name}: int8 delta scale {scale!r} is not a finite non-negative number")
    base = received[name]
    if tuple(base.shape) != tuple(array.shape):
        raise PolicyError(f"{name}: shape {tuple(array.shape)}, expected {tuple(base.shape)}")
    q = torch.frombuffer(bytearray(array.data[_SCALE.size :]), dtype=torch.int8) if numel else torch.empty(0)
    return base + q.reshape(base.shape).to(torch.float32) * scale
