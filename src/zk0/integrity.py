"""Integrity of parameter records and of the data behind them: a canonical digest, keyed episode tags.

The digest is SHA-256 over, for each array in sorted name order, its name,
dtype, shape and raw bytes, each length-prefixed so no two records share a
digest by shifting bytes between fields. It is computed over the wire
encoding, i.e. exactly the bytes that travel.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterable, Mapping

from flwr.app import ArrayRecord


class IntegrityError(RuntimeError):
    """Parameters arrived that are not the ones that were sent."""


def _field(h: hashlib._Hash, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def digest(record: ArrayRecord) -> str:
    """Canonical SHA-256 hex digest of an ArrayRecord."""
    h = hashlib.sha256()
    for name in sorted(record):
        array = record[name]
        _field(h, name.encode())
        _field(h, array.dtype.encode())
        _field(h, ",".join(str(d) for d in array.shape).encode())
        _field(h, array.data)
    return h.hexdigest()


def episode_tags(key: bytes, episode_digests: Iterable[bytes]) -> list[str]:
    """Keyed tags of episode contents: equal recordings give equal tags, and the tags tell nothing else.

    HMAC-SHA256 with the federation's key, cut to 16 hex digits (64 bits), sorted.
    """
    return sorted(hmac.new(key, d, hashlib.sha256).hexdigest()[:16] for d in episode_digests)


def shared_episodes(tags: Mapping[int, Iterable[str]]) -> list[tuple[int, int, int]]:
    """(node, node, episodes in common) for every pair of nodes that share a recording."""
    sets = {node: set(t) for node, t in tags.items()}
    pairs = itertools.combinations(sorted(sets), 2)
    return [(a, b, n) for a, b in pairs if (n := len(sets[a] & sets[b]))]
