"""``--foreground``: stay attached to started processes, as systemd and containers expect."""

from __future__ import annotations

import signal
from collections.abc import Callable

from zk0.errors import RuntimeFailure


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """From now on SIGTERM interrupts like Ctrl-C, so a stop that arrives while starting undoes the start."""
    signal.signal(signal.SIGTERM, _interrupt)


def attach(wait: Callable[[], None], stop: Callable[[], object], failure: str) -> None:
    """Block in ``wait``; on SIGTERM or Ctrl-C ``stop`` and return, if ``wait`` returns by itself fail."""
    stop_on_sigterm()
    try:
        wait()
    except KeyboardInterrupt:
        return  # asked to stop: the finally clause stops everything
    finally:
        stop()
    raise RuntimeFailure(failure)
