"""One picture of this host: the server, the federation's nodes and session, and local clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zk0 import checkpoints
from zk0.deploy.client import Clients
from zk0.deploy.server import Server
from zk0.paths import server_dir


def gather(state: Path) -> dict[str, Any]:
    """Status as plain data (what ``zk0bot status --json`` prints)."""
    server = Server(state)
    pids = server.running()
    settings = server.settings()
    up = pids["superlink"] is not None
    out: dict[str, Any] = {
        "state-dir": str(state),
        "server": {
            "up": up,
            "address": settings.address if settings and up else None,
            "superlink-pid": pids["superlink"],
            "controller-pid": pids["controller"],
            "min-clients": settings.min_clients if settings else None,
            "tls": settings.tls if settings else None,
        },
        "online-nodes": None,
        "session": None,
        "clients": [],
    }
    history = checkpoints.read_history(server_dir(state))
    if up and settings and server.reachable():  # not while the SuperLink is still starting
        control = server.control()
        try:
            out["online-nodes"] = len(control.online_nodes())
            runs = control.runs()
        finally:
            control.close()
        if runs:
            run = runs[-1]
            lines = [h for h in history if h.get("run-id") == run.run_id]
            out["session"] = {
                "run-id": run.run_id,
                "status": run.status,
                "sub-status": run.sub_status,
                "round": lines[-1]["round"] if lines else 0,
                "rounds": settings.overrides.get("num-server-rounds"),
                "bytes-sent": run.bytes_sent,
                "bytes-received": run.bytes_recv,
            }
    if history:
        last = history[-1]
        out["last-round"] = {
            "round": last["round"],
            "run-id": last.get("run-id"),
            "train": last.get("train"),
            "evaluate": last.get("evaluate"),
        }
    clients = Clients(state)
    for name in clients.names():
        info = clients.info(name)
        pid = clients.pid(name)
        out["clients"].append(
            {"name": name, "dataset-uri": info.dataset_uri, "server": info.server, "pid": pid, "up": pid is not None}
        )
    return out
