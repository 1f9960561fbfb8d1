"""Replies one at a time, as they arrive.

Flower's ``Grid.send_and_receive`` polls every 3 s and returns only when
every reply is in, so a ServerApp holds all N updates at once. Here the
messages are pushed as usual, then each reply is pulled on its own and
handed over before the next is pulled: an aggregator that drops each reply
once it has added it holds one reply at a time, whatever N is. Polling every
half second also takes most of the 3 s wait off each message's round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

POLL_SECONDS = 0.5


class StreamingGrid:
    """A Grid whose ``send_and_receive`` pushes at once and returns an iterator over the replies.

    Everything else is the wrapped grid's. Replies come in the order they
    arrive; those missing at ``timeout`` are left out, as Flower's grid does.
    """

    def __init__(self, grid: Grid, poll: float = POLL_SECONDS) -> None:
        self._grid = grid
        self._poll = poll

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        messages = list(messages)
        ids = [mid for mid in self._grid.push_messages(messages) if mid] if messages else []
        del messages  # the grid has sent them
        return self._replies(ids, timeout)

    def _replies(self, pending: list[str], timeout: float | None) -> Iterator[Message]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            for message_id in list(pending):
                got = list(self._grid.pull_messages([message_id]))
                if got:
                    pending.remove(message_id)
                while got:
                    yield got.pop()  # no other reference is kept: the caller decides how long it lives
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                return
            time.sleep(self._poll)
