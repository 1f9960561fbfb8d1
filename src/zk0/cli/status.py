"""``zk0bot status``: the server, the session and this host's clients on one screen."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from zk0.cli.options import Json, StateDir
from zk0.deploy.status import gather


def status(state_dir: StateDir, json_: Json = False) -> None:
    """Show server up/down, online nodes, the current session and local clients.

    Example: zk0bot status --json
    """
    data = gather(state_dir)
    if json_:
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console()
    server = data["server"]
    console.print(
        f"server: {'[green]up[/] at ' + server['address'] if server['up'] else '[red]down[/]'}"
        + (
            f", {data['online-nodes']} node(s) online (session starts at {server['min-clients']})"
            if server["up"]
            else ""
        )
    )
    if session := data["session"]:
        console.print(
            f"session {session['run-id']}: {session['status']} {session['sub-status']}".rstrip()
            + f", round {session['round']}/{session['rounds']}"
        )
    if last := data.get("last-round"):
        train, ev = last.get("train") or {}, last.get("evaluate") or {}
        console.print(
            f"last round {last['round']}: train loss {train.get('train-loss', float('nan')):.4f}, "
            f"eval loss {ev.get('eval-loss', float('nan')):.4f}, action MSE {ev.get('action-mse', float('nan')):.4f}"
        )
    table = Table(title="clients on this host")
    for col in ("name", "dataset", "server", "pid", "state"):
        table.add_column(col)
    for c in data["clients"]:
        table.add_row(
            c["name"],
            c["dataset-uri"],
            c["server"],
            str(c["pid"] or "-"),
            "[green]up[/]" if c["up"] else "[red]down[/]",
        )
    console.print(table)
