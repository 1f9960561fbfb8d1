"""The session controller: starts a Flower run of zk0 whenever enough clients are online.

It watches the SuperLink through the Control API, never starts two sessions
at once, and logs each decision with a timestamp. Clients that join during a
session are sampled from the next round on (Flower samples per round).

Run as ``python -m zk0.deploy.controller --address HOST:PORT --app-dir DIR ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from zk0.deploy.control import FINISHED, RunInfo

log = logging.getLogger("zk0.controller")


class ControlAPI(Protocol):
    def online_nodes(self) -> list[int]: ...
    def runs(self) -> list[RunInfo]: ...
    def start_run(self, fab_bytes: bytes, overrides: Mapping[str, Any]) -> int: ...


class Controller:
    """Decides, one :meth:`step` at a time, whether to start a session."""

    def __init__(self, control: ControlAPI, fab: bytes, overrides: Mapping[str, Any], min_clients: int) -> None:
        self.control = control
        self.fab = fab  # the app bundle, built once
        self.overrides = dict(overrides)
        self.min_clients = min_clients
        self.current: int | None = None  # the session this controller started and has not seen end
        self._last = ""

    def _say(self, decision: str) -> str:
        if decision != self._last:
            log.info("%s", decision)
            self._last = decision
        return decision

    def step(self) -> str:
        """Look once and act: wait for a running session, idle, or start one."""
        runs = self.control.runs()
        active = [r for r in runs if r.status != FINISHED]
        if active:
            return self._say(f"session {active[-1].run_id} is {active[-1].status}; waiting for it to finish")
        if self.current is not None:
            ended = next((r for r in runs if r.run_id == self.current), None)
            self._say(f"session {self.current} finished: {ended.sub_status if ended else 'gone'}")
            self.current = None
        online = self.control.online_nodes()
        if len(online) < self.min_clients:
            return self._say(f"idle: {len(online)} of {self.min_clients} clients online")
        run_id = self.control.start_run(self.fab, self.overrides)
        self.current = run_id
        return self._say(f"started session {run_id} with {len(online)} clients online")

    def run(self, stop: threading.Event, poll: float = 2.0) -> None:
        """Step every ``poll`` seconds until ``stop`` is set; Control API hiccups are logged, not fatal."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as err:  # noqa: BLE001 - the SuperLink may be restarting; keep watching
                self._say(f"Control API call failed, retrying: {err}")
            stop.wait(poll)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zk0.deploy.controller")
    parser.add_argument("--address", required=True)
    parser.add_argument("--app-dir", type=Path, required=True)
    parser.add_argument("--min-clients", type=int, required=True)
    parser.add_argument("--overrides", default="{}", help="run-config overrides as a JSON object")
    parser.add_argument("--root-certificates", type=Path)
    parser.add_argument("--poll", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise

    from zk0.deploy.control import Control, build_fab

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    control = Control(args.address, root_certificates=args.root_certificates)
    log.info("controller watching %s: a session starts when %d clients are online", args.address, args.min_clients)
    try:
        fab = build_fab(args.app_dir)
        Controller(control, fab, json.loads(args.overrides), args.min_clients).run(stop, args.poll)
    finally:
        control.close()
        log.info("controller stopped")


if __name__ == "__main__":
    main()
