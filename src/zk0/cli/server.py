"""``zk0bot server start|stop|log``: the always-on federation server."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from zk0.cli.logs import show
from zk0.cli.options import Follow, Lines, StateDir, parse_settings, validated_run_config
from zk0.deploy.server import Server, ServerSettings
from zk0.errors import RuntimeFailure

app = typer.Typer(help="Run the federation server (SuperLink + session controller).", no_args_is_help=True)


@app.command("start")
def server_start(
    state_dir: StateDir,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for all interfaces.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Flower's HTTP port (Fleet, Control, Runtime APIs).")
    ] = 8000,
    min_clients: Annotated[int, typer.Option(min=1, help="Clients online before a session starts.")] = 2,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds per session.")] = 3,
    set_: Annotated[
        list[str], typer.Option("--set", help="Run setting key=value (repeatable), e.g. --set local-steps=100.")
    ] = [],  # noqa: B006
    foreground: Annotated[
        bool, typer.Option(help="Stay attached; stop everything on SIGTERM (systemd, containers).")
    ] = False,
) -> None:
    """Start the server; a session starts by itself once MIN_CLIENTS clients are online.

    Example: zk0bot server start --host 0.0.0.0 --rounds 10 --set local-steps=200
    """
    overrides = {**parse_settings(set_), "num-server-rounds": rounds, "min-clients": min_clients}
    validated_run_config(overrides)
    server = Server(state_dir)
    settings = ServerSettings(host=host, port=port, min_clients=min_clients, overrides=overrides)
    server.start(settings)
    typer.echo(f"server listening on {settings.address}; state in {state_dir}")
    typer.echo(f"next: zk0bot client start hf:OWNER/DATASET --server {settings.address}", err=True)
    if foreground:
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.wait()
        except KeyboardInterrupt:
            return  # asked to stop: the finally clause stops everything
        finally:
            server.stop()
        raise RuntimeFailure(
            f"a server process exited on its own; see {server.superlink_log} and {server.controller_log}"
        )


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@app.command("stop")
def server_stop(state_dir: StateDir) -> None:
    """Stop the server's processes (SIGTERM, then SIGKILL after 10 s)."""
    stopped = Server(state_dir).stop()
    typer.echo(f"stopped {len(stopped)} process(es)" if stopped else "the server was not running")


@app.command("log")
def server_log(state_dir: StateDir, follow: Follow = False, lines: Lines = 40) -> None:
    """Show the SuperLink and controller logs.

    Example: zk0bot server log -f
    """
    server = Server(state_dir)
    show([server.superlink_log, server.controller_log], lines, follow)
