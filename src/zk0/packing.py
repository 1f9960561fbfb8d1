"""Few objects per message: a record's parameter arrays packed into arrays of about one Flower chunk.

Flower moves every Array of a message as objects of its own (the Array, and
each chunk of it of up to 5 MiB), one HTTP request per object and a few at a
time; a receiver that asks for an object not uploaded yet backs off for a
second or more. SmolVLA's trainable parameters are many small tensors (47 in
the tiny test model, ~150 in smolvla_base), so one Array per tensor costs more
in requests than in bytes (docs/BENCHMARKS.md, sections 1 and 5).

Packed, a record holds one Array per ~5 MiB of parameters, keyed
``packed-00000``, ``packed-00001``, ...; a tensor larger than that travels
alone in its own, chunked by Flower as before. A packed Array has stype
``zk0.packed``, dtype ``uint8`` and shape ``(len(data),)``; its data is a
4-byte little-endian header length, a JSON header listing each entry as
``[name, dtype, stype, shape, nbytes]``, then the entries' bytes in that order.
Packing is lossless: unpacking gives back the same Arrays (dtype, shape, stype
and bytes), so digests and checks work on the unpacked record as before.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator

from flwr.app import Array, ArrayRecord

from zk0.errors import PolicyError

STYPE_PACKED = "zk0.packed"
# Flower's chunk size (flwr.common.constant.FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE): a bucket is one chunk.
BUCKET_BYTES = 5 * 1024 * 1024
_HEADER = struct.Struct("<I")


def pack(arrays: Iterable[tuple[str, Array]], bucket_bytes: int = BUCKET_BYTES) -> ArrayRecord:
    """``(name, Array)`` pairs (e.g. ``record.items()``) packed in order into buckets of at most ``bucket_bytes``.

    An iterator is read one pair at a time: only the bucket being filled is held besides the result.
    """
    packed = ArrayRecord()
    entries: list[tuple[str, Array]] = []
    size = 0
    for name, array in arrays:
        if entries and size + len(array.data) > bucket_bytes:
            packed[_key(len(packed))] = _bucket(entries)
            entries, size = [], 0
        entries.append((name, array))
        size += len(array.data)
    if entries:
        packed[_key(len(packed))] = _bucket(entries)
    return packed


def drain(record: ArrayRecord) -> Iterator[tuple[str, Array]]:
    """``record``'s pairs, each taken out as it is read: ``pack(drain(record))`` holds the arrays once, not twice."""
    for name in list(record):
        yield name, record.pop(name)


def _key(index: int) -> str:
    return f"packed-{index:05d}"


def _bucket(entries: list[tuple[str, Array]]) -> Array:
    header = json.dumps([[n, a.dtype, a.stype, list(a.shape), len(a.data)] for n, a in entries]).encode()
    data = b"".join([_HEADER.pack(len(header)), header, *(a.data for _, a in entries)])
    return Array(dtype="uint8", shape=(len(data),), stype=STYPE_PACKED, data=data)


def unpack(packed: ArrayRecord) -> ArrayRecord:
    """The named Arrays of a record made by :func:`pack`; raises PolicyError on a malformed one.

    Takes the buckets out of ``packed`` as it goes, so a large update is held
    once, not twice (``packed`` is left empty).
    """
    record = ArrayRecord()
    for key in sorted(packed):
        for name, array in _entries(key, packed.pop(key)):
            if name in record:
                raise PolicyError(f"packed array {key}: parameter {name!r} appears twice")
            record[name] = array
    return record


def _entries(key: str, bucket: Array) -> list[tuple[str, Array]]:
    if bucket.stype != STYPE_PACKED or bucket.dtype != "uint8" or tuple(bucket.shape) != (len(bucket.data),):
        raise PolicyError(f"array {key}: expected a {STYPE_PACKED} array, got {bucket.stype}/{bucket.dtype}")
    data = bucket.data
    if len(data) < _HEADER.size or (end := _HEADER.size + _HEADER.unpack_from(data)[0]) > len(data):
        raise PolicyError(f"packed array {key}: truncated header")
    try:
        header = json.loads(data[_HEADER.size : end])
        entries = [_entry(item) for item in header]
    except (ValueError, TypeError, RecursionError) as err:  # RecursionError: JSON nested too deep
        raise PolicyError(f"packed array {key}: malformed header ({err})") from None
    if (listed := sum(n for *_, n in entries)) != len(data) - end:
        raise PolicyError(f"packed array {key}: {len(data) - end} bytes of data, its header lists {listed}")
    out = []
    for name, dtype, stype, shape, nbytes in entries:
        out.append((name, Array(dtype=dtype, shape=shape, stype=stype, data=data[end : end + nbytes])))
        end += nbytes
    return out


def _entry(item: object) -> tuple[str, str, str, tuple[int, ...], int]:
    """One header entry, type-checked: ``[name, dtype, stype, shape, nbytes]``."""
    if not isinstance(item, list) or len(item) != 5:
        raise ValueError(f"entry {item!r} is not [name, dtype, stype, shape, nbytes]")
    name, dtype, stype, shape, nbytes = item
    if not all(isinstance(s, str) for s in (name, dtype, stype)):
        raise ValueError(f"entry {item!r}: name, dtype and stype must be strings")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"entry {name!r}: shape {shape!r} must be non-negative integers")
    if type(nbytes) is not int or nbytes < 0:
        raise ValueError(f"entry {name!r}: byte count {nbytes!r} must be a non-negative integer")
    return name, dtype, stype, tuple(shape), nbytes
