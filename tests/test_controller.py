"""The session controller's decisions, step by step, against a scripted SuperLink."""

import logging

import pytest

from zk0.deploy.control import RunInfo
from zk0.deploy.controller import Controller


class ScriptedLink:
    """Stands in for the Control API: nodes and runs as the test sets them."""

    def __init__(self) -> None:
        self.nodes: list[int] = []
        self._runs: list[RunInfo] = []
        self.started: list[dict] = []
        self.stopped: list[int] = []

    def online_nodes(self) -> list[int]:
        return list(self.nodes)

    def runs(self) -> list[RunInfo]:
        return list(self._runs)

    def start_run(self, fab: bytes, overrides: dict) -> int:
        self.started.append(overrides)
        run_id = 100 + len(self.started)
        self._runs.append(RunInfo(run_id, "pending", "", 0, 0))
        return run_id

    def stop_run(self, run_id: int) -> None:
        self.stopped.append(run_id)

    def finish(self, run_id: int, sub_status: str = "completed") -> None:
        self._runs = [RunInfo(r.run_id, "finished", sub_status, 0, 0) if r.run_id == run_id else r for r in self._runs]


@pytest.fixture(autouse=True)
def info_logs(caplog):
    caplog.set_level(logging.INFO, logger="zk0.controller")


def test_idles_below_min_clients_then_starts_one_session_at_a_time(caplog):
    link = ScriptedLink()
    ctl = Controller(link, b"fab", {"num-server-rounds": 2}, min_clients=2)

    link.nodes = [1]
    assert ctl.step() == "idle: 1 of 2 clients online"
    link.nodes = [1, 2]
    assert ctl.step() == "started session 101 with 2 clients online"
    link.nodes = [1, 2, 3]
    assert ctl.step() == "session 101 is pending; waiting for it to finish"
    assert len(link.started) == 1, "never two sessions at once"
    assert link.started == [{"num-server-rounds": 2}]

    link.finish(101)
    link.nodes = [1]
    assert ctl.step() == "idle: 1 of 2 clients online"
    assert "session 101 finished: completed" in caplog.text
    link.nodes = [1, 4]
    assert ctl.step() == "started session 102 with 2 clients online"


def test_stops_a_session_left_open_by_a_killed_server_then_waits_for_others():
    link = ScriptedLink()
    link._runs = [RunInfo(7, "running", "", 0, 0)]  # its ServerApp died with the previous server
    link.nodes = [1, 2]
    ctl = Controller(link, b"fab", {}, min_clients=2)

    assert ctl.step() == "session 7 is running; waiting for it to finish"
    assert link.stopped == [7] and link.started == []
    link.finish(7, "stopped")
    assert ctl.step() == "started session 101 with 2 clients online"
    # A session someone else starts later (flwr run) is waited for, not stopped.
    link.finish(101)
    link._runs.append(RunInfo(9, "running", "", 0, 0))
    assert ctl.step() == "session 9 is running; waiting for it to finish"
    assert link.stopped == [7]


def test_each_started_session_is_announced():
    link = ScriptedLink()
    link.nodes = [1, 2]
    seen = []

    Controller(link, b"fab", {}, min_clients=2, on_start=seen.append).step()

    assert seen == [101]


def test_decisions_are_logged_once_each_with_a_timestamp(caplog):
    link = ScriptedLink()
    ctl = Controller(link, b"fab", {}, min_clients=3)

    for _ in range(3):
        ctl.step()

    assert caplog.text.count("idle: 0 of 3 clients online") == 1
    assert all(record.created > 0 for record in caplog.records)
