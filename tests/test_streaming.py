"""StreamingGrid: replies handed over one at a time as they arrive, each dropped before the next is pulled."""

import gc
import weakref

import pytest
from flwr.app import Message, RecordDict

from zk0.streaming import StreamingGrid

pytestmark = pytest.mark.usefixtures("task_identity")


class SlowGrid:
    """Replies become ready after a number of pulls each; every reply handed out is watched through a weakref."""

    def __init__(self, ready_after: dict[int, int]) -> None:
        self.ready_after = ready_after  # node -> pulls of its message before its reply is ready
        self.pulls: dict[str, int] = {}
        self.nodes: dict[str, int] = {}
        self.handed_out: list[weakref.ref] = []
        self.alive_at_pull: list[int] = []

    def get_node_ids(self):
        return sorted(self.ready_after)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            mid = f"m{msg.metadata.dst_node_id}"
            self.nodes[mid] = msg.metadata.dst_node_id
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        gc.collect()
        self.alive_at_pull.append(sum(ref() is not None for ref in self.handed_out))
        out = []
        for mid in message_ids:
            self.pulls[mid] = self.pulls.get(mid, 0) + 1
            if self.pulls[mid] == self.ready_after[self.nodes[mid]]:
                reply = Message(content=RecordDict(), dst_node_id=0, message_type="train")
                reply.metadata.__dict__["_src_node_id"] = self.nodes[mid]
                self.handed_out.append(weakref.ref(reply))
                out.append(reply)
        return out


def messages(nodes):
    return [Message(content=RecordDict(), dst_node_id=n, message_type="train") for n in nodes]


def test_replies_come_as_they_are_ready_and_none_is_held_while_the_next_is_pulled():
    grid = SlowGrid({1: 3, 2: 1, 3: 2})
    order = []

    for reply in StreamingGrid(grid, poll=0.01).send_and_receive(messages([1, 2, 3]), timeout=10):
        order.append(reply.metadata.src_node_id)
        del reply

    assert order == [2, 3, 1]
    assert max(grid.alive_at_pull) == 0  # every reply had been dropped before the next pull
    assert grid.get_node_ids() == [1, 2, 3]  # the rest of the Grid API is the wrapped grid's


def test_replies_missing_at_the_timeout_are_left_out():
    grid = SlowGrid({1: 1, 2: 10**9})

    got = list(StreamingGrid(grid, poll=0.01).send_and_receive(messages([1, 2]), timeout=0.2))

    assert [r.metadata.src_node_id for r in got] == [1]


def test_no_messages_no_replies():
    assert list(StreamingGrid(SlowGrid({})).send_and_receive([], timeout=1)) == []
