"""The session controller: starts a Flower run of zk0 whenever enough clients are online.

It watches the SuperLink through the Control API, never starts two sessions
at once, and logs each decision with a timestamp. Clients that join during a
session are sampled from the next round on (Flower samples per round).

Run as ``python -m zk0.deploy.controller --address HOST:PORT --min-clients N ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from zk0.deploy.control import FINISHED, RunInfo

log = logging.getLogger("zk0.controller")
READY = "controller watching"


class ControlAPI(Protocol):
    def online_nodes(self) -> list[int]: ...
    def runs(self) -> list[RunInfo]: ...
    def start_run(self, fab_bytes: bytes, overrides: Mapping[str, Any]) -> int: ...
    def stop_run(self, run_id: int) -> None: ...


class Controller:
    """Decides, one :meth:`step` at a time, whether to start a session.

    ``on_start`` is called with each session it starts (main() tails its log).
    """

    def __init__(
        self,
        control: ControlAPI,
        fab: bytes,
        overrides: Mapping[str, Any],
        min_clients: int,
        on_start: Callable[[int], None] = lambda run_id: None,
    ) -> None:
        self.control = control
        self.fab = fab  # the app bundle, built once
        self.overrides = dict(overrides)
        self.min_clients = min_clients
        self.on_start = on_start
        self.current: int | None = None  # the session this controller started and has not seen end
        self._last = ""
        self._orphans_checked = False

    def _say(self, decision: str) -> str:
        if decision != self._last:
            log.info("%s", decision)
            self._last = decision
        return decision

    def step(self) -> str:
        """Look once and act: wait for a running session, idle, or start one."""
        runs = self.control.runs()
        active = [r for r in runs if r.status != FINISHED]
        if not self._orphans_checked:
            # The controller starts with its SuperLink: a run still open now lost its ServerApp
            # (the server was killed); stop it so the next session resumes from the checkpoint.
            self._orphans_checked = True
            for run in active:
                self.control.stop_run(run.run_id)
                self._say(f"stopping session {run.run_id}, left {run.status} by a previous server process")
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
        self.on_start(run_id)
        return self._say(f"started session {run_id} with {len(online)} clients online")

    def run(self, stop: threading.Event, poll: float = 2.0) -> None:
        """Step every ``poll`` seconds until ``stop`` is set; Control API hiccups are logged, not fatal."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as err:  # noqa: BLE001 - the SuperLink may be restarting; keep watching
                self._say(f"Control API call failed, retrying: {err}")
            stop.wait(poll)


def tail_session(connect: Callable[[], Any], run_id: int, path: Path) -> None:
    """Append a session's ServerApp log (rounds, rejected updates and why) to ``path`` as it is written."""
    control = connect()
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"=== session {run_id} ===\n")
            for text in control.logs(run_id):
                fh.write(text if text.endswith("\n") else text + "\n")
                fh.flush()
    except Exception as err:  # noqa: BLE001 - the SuperLink went away; the session's log stays in its database
        log.warning("log of session %d no longer followed: %s", run_id, err)
    finally:
        control.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zk0.deploy.controller")
    parser.add_argument("--address", required=True)
    parser.add_argument("--min-clients", type=int, required=True)
    parser.add_argument("--overrides", default="{}", help="run-config overrides as a JSON object")
    parser.add_argument("--root-certificates", type=Path)
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--session-log", type=Path, help="append each session's ServerApp log here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise

    from zk0.deploy.control import Control, build_fab

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def connect() -> Control:
        return Control(args.address, root_certificates=args.root_certificates)

    def tail(run_id: int) -> None:
        if args.session_log is not None:
            threading.Thread(target=tail_session, args=(connect, run_id, args.session_log), daemon=True).start()

    control = connect()
    try:
        fab = build_fab()
        # zk0bot server start waits for this line: the controller is ready.
        log.info(READY + " %s: a session starts when %d clients are online", args.address, args.min_clients)
        Controller(control, fab, json.loads(args.overrides), args.min_clients, on_start=tail).run(stop, args.poll)
    finally:
        control.close()
        log.info("controller stopped")


if __name__ == "__main__":
    main()
