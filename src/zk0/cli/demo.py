"""``zk0bot demo``: a whole federated session on this machine, offline, through the real commands' code."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from zk0 import checkpoints
from zk0.cli.options import validated_run_config
from zk0.deploy.client import Clients, check_dataset
from zk0.deploy.control import FINISHED, Control
from zk0.deploy.process import free_port
from zk0.deploy.server import Server, ServerSettings
from zk0.errors import RuntimeFailure
from zk0.paths import server_dir

# The tiny offline model: small enough for a CPU, big enough to be SmolVLA.
TINY = {"image-size": 64, "chunk-size": 10, "n-action-steps": 10, "local-steps": 10, "batch-size": 4}


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zk0" / "offline-kit"


def demo(
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 2,
    clients: Annotated[int, typer.Option(min=1, max=8, help="Simulated robots, each with its own dataset.")] = 2,
    model: Annotated[str, typer.Option(help="Hub id or local dir; default: the offline tiny backbone.")] = "",
    local_steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per client per round.")] = TINY[
        "local-steps"
    ],
) -> None:
    """Run a real federated session on loopback: one server, CLIENTS robots, offline.

    Example: zk0bot demo --rounds 3 --clients 2
    """
    from zk0.offline import build_kit

    console = Console(stderr=True, soft_wrap=True)
    started = time.monotonic()
    console.print(f"[bold]zk0 demo[/]: building the offline kit in {_cache_dir()} ...")
    kit = build_kit(_cache_dir(), clients=clients)
    if not model:
        os.environ["HF_HUB_OFFLINE"] = "1"  # inherited by every process started below
    overrides: dict[str, Any] = {
        **TINY,
        "local-steps": local_steps,
        "num-server-rounds": rounds,
        "min-clients": clients,
        "model": model or str(kit.backbone),
    }
    validated_run_config(overrides)
    state = Path(tempfile.mkdtemp(prefix="zk0-demo-"))
    settings = ServerSettings(port=free_port(), min_clients=clients, overrides=overrides)
    server, robots = Server(state), Clients(state)
    threads = max(1, len(os.sched_getaffinity(0)) // clients)  # the robots share this machine's cores
    console.print(f"zk0bot server start (state and logs in {state}) ...")
    try:
        server.start(settings)
        for i, dataset in enumerate(kit.datasets):
            uri = f"local:{dataset}"
            info = robots.start(
                uri,
                server=settings.address,
                name=f"robot-{i}",
                num_workers=0,
                threads=threads,
                report=check_dataset(uri),
            )
            console.print(f"zk0bot client start {uri} --name {info.name}: cameras {', '.join(info.cameras)}")
        rows = _follow_session(settings.address, state, rounds, console)
    finally:
        for name in robots.names():
            robots.stop(name)
        server.stop()
    _summary(rows, time.monotonic() - started)
    _results(state, f"local:{kit.datasets[0]}", console)


def _results(state: Path, dataset_uri: str, console: Console) -> None:
    """What an operator does next: zk0bot report, then zk0bot export and a prediction with LeRobot alone."""
    import contextlib
    import sys

    from zk0 import export, report
    from zk0.cli.report import print_table

    console.print("zk0bot report ...")
    rows = report.load(state)
    print_table(rows)
    console.print(f"plot: {report.plot(rows, server_dir(state) / 'report.png')}")
    policy = state / "policy"
    console.print(f"zk0bot export latest {policy} --stats-from {dataset_uri} ...")
    with contextlib.redirect_stdout(sys.stderr):  # LeRobot prints while building
        exported, _ = export.export(server_dir(state), export.LATEST, policy, dataset_uri)
        shape = export.try_policy(policy, dataset_uri)
    console.print(
        f"LeRobot loaded the round-{exported} policy from {policy} and predicted an action chunk of "
        f"shape {shape} for the first frame of {dataset_uri}"
    )


def _follow_session(address: str, state: Path, rounds: int, console: Console) -> list[dict[str, Any]]:
    """Wait for the controller's first session to finish, printing each round as it lands."""
    deadline = time.monotonic() + 600 + 300 * rounds
    control = Control(address)
    rows: list[dict[str, Any]] = []  # trained rounds
    seen: list[dict[str, Any]] = []  # every history line, round 0 too
    try:
        while time.monotonic() < deadline:
            for line in checkpoints.read_history(server_dir(state))[len(seen) :]:
                seen.append(line)
                ev = line.get("evaluate") or {}
                if line["round"] == 0:
                    console.print(
                        f"round 0 (untrained): eval loss {ev.get('eval-loss', float('nan')):.4f}, "
                        f"action MSE {ev.get('action-mse', float('nan')):.4f} (measured by round 1's clients)"
                    )
                    continue
                if not line.get("accepted"):
                    raise RuntimeFailure(
                        f"round {line['round']}: no client update was accepted; "
                        f"see {state / 'superlink' / 'sessions.log'}"
                    )
                rows.append(line)
                console.print(
                    f"round {line['round']}/{rounds}: {line['accepted']} updates, "
                    f"train loss {(line.get('train') or {}).get('train-loss', float('nan')):.4f}, "
                    f"eval loss {ev.get('eval-loss', float('nan')):.4f}, {line['seconds']:.0f} s"
                )
            runs = control.runs()
            if runs and runs[0].status == FINISHED:
                if runs[0].sub_status != "completed" or len(rows) < rounds:
                    raise RuntimeFailure(
                        f"the session ended {runs[0].sub_status} after {len(rows)} rounds; "
                        f"see {state / 'superlink'} and {state / 'clients'}"
                    )
                return rows[:rounds]
            time.sleep(1.0)
    finally:
        control.close()
    raise RuntimeFailure(f"the session did not finish in time; logs in {state}")


def _summary(rows: list[dict[str, Any]], seconds: float) -> None:
    table = Table(title=f"zk0 demo: {len(rows)} rounds in {seconds:.0f} s")
    for col in ("round", "clients", "train loss (per client)", "eval loss", "action MSE", "bytes up"):
        table.add_column(col, justify="right")
    for line in rows:
        ev = line.get("evaluate") or {}
        per_client = " ".join(f"{c['train-loss']:.3f}" for c in line["clients"])
        table.add_row(
            str(line["round"]),
            str(line["accepted"]),
            per_client,
            f"{ev.get('eval-loss', float('nan')):.4f}",
            f"{ev.get('action-mse', float('nan')):.4f}",
            f"{sum(c['payload-bytes'] for c in line['clients']):,}",
        )
    Console().print(table)
