"""zk0bot: the operator's command line. One error boundary, in :func:`main`."""

from __future__ import annotations

import os
import sys

import typer

from zk0.cli import demo

app = typer.Typer(
    name="zk0bot",
    help="Federated SmolVLA training for SO-100/SO-101 robots, on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo")(demo.demo)


@app.callback()
def _root() -> None:
    """Federated SmolVLA training for SO-100/SO-101 robots, on Flower."""


def _user_errors() -> tuple[type[Exception], ...]:
    """Domain errors the user can fix: one line on stderr, exit code 2."""
    from zk0.config import ConfigError
    from zk0.datasets import DatasetError
    from zk0.policy import PolicyError

    return (ConfigError, DatasetError, PolicyError)


def main() -> None:
    """Entry point of the ``zk0bot`` console script."""
    try:
        app()
    except _user_errors() as err:
        if os.environ.get("ZK0_DEBUG"):
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    except demo.RunFailed as err:
        if os.environ.get("ZK0_DEBUG"):
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
