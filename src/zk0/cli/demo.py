"""``zk0bot demo``: a whole federated run on this machine, offline, from a fresh clone."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from zk0.deploy.local import LocalFederation, RunFailed

__all__ = ["RunFailed", "demo"]

# The tiny offline model: small enough for a CPU, big enough to be SmolVLA.
TINY = {"image-size": 64, "chunk-size": 10, "n-action-steps": 10, "local-steps": 10, "batch-size": 4}
SOURCE_ROOT = Path(__file__).resolve().parents[3]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zk0" / "offline-kit"


def demo(
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 2,
    clients: Annotated[int, typer.Option(min=1, max=8, help="Simulated robots, each with its own dataset.")] = 2,
    model: Annotated[str, typer.Option(help="Hub id or local dir; default: the offline tiny backbone.")] = "",
    local_steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per client per round.")] = TINY["local-steps"],
) -> None:
    """Run a real federated session on loopback: one server, CLIENTS robots, offline.

    Example: zk0bot demo --rounds 3 --clients 2
    """
    from zk0.offline import build_kit

    console = Console(stderr=True)
    if not (SOURCE_ROOT / "pyproject.toml").is_file():
        raise RunFailed(f"the demo submits the app from a source checkout; none found at {SOURCE_ROOT}")
    started = time.monotonic()
    console.print(f"[bold]zk0 demo[/]: building the offline kit in {_cache_dir()} ...")
    kit = build_kit(_cache_dir(), clients=clients)
    run_config: dict[str, Any] = {**TINY, "local-steps": local_steps, "num-server-rounds": rounds,
                                  "min-clients": clients, "model": model or str(kit.backbone)}
    nodes = [{"dataset-uri": f"local:{d}", "num-workers": 0} for d in kit.datasets]
    home = Path(tempfile.mkdtemp(prefix="zk0-demo-"))
    env = {"HF_HUB_OFFLINE": "1"} if not model else {}
    rows: list[dict[str, Any]] = []

    def on_round(line: dict[str, Any]) -> None:
        rows.append(line)
        ev = line.get("evaluate") or {}
        console.print(f"round {line['round']}/{rounds}: {line['accepted']} updates, "
                      f"train loss {line.get('train', {}).get('train-loss', float('nan')):.4f}, "
                      f"eval loss {ev.get('eval-loss', float('nan')):.4f}, {line['seconds']:.0f} s")

    console.print(f"starting a SuperLink and {clients} SuperNodes on 127.0.0.1 (logs in {home / 'logs'}) ...")
    with LocalFederation(home, nodes, env=env) as fed:
        fed.run(SOURCE_ROOT, run_config, timeout=600 + 300 * rounds, on_round=on_round)
    _summary(rows, time.monotonic() - started)


def _summary(rows: list[dict[str, Any]], seconds: float) -> None:
    table = Table(title=f"zk0 demo: {len(rows)} rounds in {seconds:.0f} s")
    for col in ("round", "clients", "train loss (per client)", "eval loss", "action MSE", "bytes up"):
        table.add_column(col, justify="right")
    for line in rows:
        ev = line.get("evaluate") or {}
        per_client = " ".join(f"{c['train-loss']:.3f}" for c in line["clients"])
        table.add_row(str(line["round"]), str(line["accepted"]), per_client,
                      f"{ev.get('eval-loss', float('nan')):.4f}", f"{ev.get('action-mse', float('nan')):.4f}",
                      f"{sum(c['payload-bytes'] for c in line['clients']):,}")
    Console().print(table)
