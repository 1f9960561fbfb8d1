"""zk0bot: the operator's command line. One error boundary, in :func:`main`."""

from __future__ import annotations

import os
import sys

import typer

from zk0.cli import client, demo, export, report, server, status
from zk0.errors import RuntimeFailure, UserError

app = typer.Typer(
    name="zk0bot",
    help="Federated SmolVLA training for SO-100/SO-101 robots, on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(server.app, name="server")
app.add_typer(client.app, name="client")
app.command("status")(status.status)
app.command("demo")(demo.demo)
app.command("report")(report.report)
app.command("export")(export.export)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zk0bot`` console script (``argv`` for tests; default: the command line)."""
    try:
        app(args=argv, prog_name="zk0bot")
    except UserError as err:  # the user can fix it: one line, exit code 2
        if os.environ.get("ZK0_DEBUG"):
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    except RuntimeFailure as err:  # failed while running: one line naming the log, exit code 1
        if os.environ.get("ZK0_DEBUG"):
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
