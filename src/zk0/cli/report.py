"""``zk0bot report``: the server's rounds as a table and a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from zk0 import report as history
from zk0.cli.options import Json, StateDir
from zk0.paths import server_dir


def _num(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def report(
    state_dir: StateDir,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="PNG to write (default: report.png in the server's state dir).")
    ] = None,
    json_: Json = False,
) -> None:
    """Print each round's losses and action MSE, and plot them (round 0, the untrained model, as a dashed line).

    Example: zk0bot report --out report.png
    """
    rows = history.load(state_dir)
    png = history.plot(rows, out if out is not None else server_dir(state_dir) / "report.png")
    if json_:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        print_table(rows)
    typer.echo(f"plot: {png}", err=True)


def print_table(rows: list[history.Row]) -> None:
    """The per-round table on stdout."""
    table = Table(title=f"zk0: {len(rows)} round(s)")
    for col in ("round", "train loss", "eval loss", "action MSE", "updates ok/rejected", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        updates = "-" if r.accepted is None else f"{r.accepted}/{r.rejected or 0}"
        seconds = "-" if math.isnan(r.seconds) else f"{r.seconds:.1f}"
        table.add_row(str(r.round), _num(r.train_loss), _num(r.eval_loss), _num(r.action_mse), updates, seconds)
    Console().print(table)
