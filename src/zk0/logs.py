"""Route zk0's log records through Flower's handlers, so they land in the app's Flower log."""

from __future__ import annotations

import logging


def use_flower_handlers() -> None:
    """Give the ``zk0`` logger Flower's handlers (idempotent).

    Neither logger propagates to the root logger: libraries imported with
    SmolVLA configure a root handler, which would print every line twice.
    """
    ours, flower = logging.getLogger("zk0"), logging.getLogger("flwr")
    ours.setLevel(logging.INFO)
    ours.propagate = False
    flower.propagate = False
    for handler in flower.handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
