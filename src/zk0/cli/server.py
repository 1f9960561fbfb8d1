"""``zk0bot server start|stop|log``: the always-on federation server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zk0 import hub, tracking
from zk0.cli.foreground import attach, stop_on_sigterm
from zk0.cli.logs import show
from zk0.cli.options import Follow, Lines, StateDir, parse_settings, validated_run_config
from zk0.deploy import DeployError
from zk0.deploy.client import check_dataset
from zk0.deploy.server import Server, ServerSettings, is_loopback
from zk0.deploy.tls import fingerprint, read_public_key

app = typer.Typer(help="Run the federation server (SuperLink + session controller).", no_args_is_help=True)


Host = Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for all interfaces.")]
Names = Annotated[
    list[str],
    typer.Option("--san", help="A DNS name or IP clients use to reach the server (repeatable); in its certificate."),
]


def _announce_ca(server: Server) -> None:
    ca = server.tls.ca_cert
    typer.echo(f"CA certificate: {ca}", err=True)
    typer.echo(f"CA SHA-256 fingerprint: {fingerprint(ca)}", err=True)
    typer.echo("share ca.pem with node owners; they compare the fingerprint before using it", err=True)


@app.command("init")
def server_init(state_dir: StateDir, host: Host = "127.0.0.1", names: Names = []) -> None:  # noqa: B006
    """Create the CA and the server certificate (server start does it too, when TLS is on).

    Example: zk0bot server init --host 0.0.0.0 --san fl.example.org --san 203.0.113.7
    """
    server = Server(state_dir)
    server.init_tls(host, names)
    typer.echo(server.tls.ca_cert)
    _announce_ca(server)


@app.command("start")
def server_start(
    state_dir: StateDir,
    host: Host = "127.0.0.1",
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
    tls: Annotated[
        bool | None,
        typer.Option(
            "--tls/--insecure",
            help="TLS with node authentication (default), or plaintext (default on loopback only).",
            show_default=False,
        ),
    ] = None,
    names: Names = [],  # noqa: B006
) -> None:
    """Start the server; a session starts by itself once MIN_CLIENTS clients are online.

    Example: zk0bot server start --host 0.0.0.0 --san fl.example.org --rounds 10 --set local-steps=200
    """
    overrides = {**parse_settings(set_), "num-server-rounds": rounds, "min-clients": min_clients}
    cfg = validated_run_config(overrides)
    hub.check_repo_id(cfg.hub_repo_id)
    tracking.check_ready(cfg.use_wandb)  # a missing WANDB_API_KEY fails now, not mid-session
    if cfg.eval_dataset_uri:
        check_dataset(cfg.eval_dataset_uri, state_dim=cfg.state_dim, action_dim=cfg.action_dim)
    tls = not is_loopback(host) if tls is None else tls
    server = Server(state_dir)
    settings = ServerSettings(host=host, port=port, min_clients=min_clients, overrides=overrides, tls=tls, names=names)
    if foreground:
        stop_on_sigterm()
    try:
        server.start(settings)  # undoes itself if interrupted
    except KeyboardInterrupt:
        return
    if not tls and not is_loopback(host):
        typer.echo(f"Warning: --insecure on {host}: parameters travel unencrypted and any node may join", err=True)
    typer.echo(f"server listening on {settings.address} ({'TLS' if tls else 'insecure'}); state in {state_dir}")
    if tls:
        _announce_ca(server)
        typer.echo("next: zk0bot server allow NODE.pub (for each node key), then on each node:", err=True)
        typer.echo(
            f"  zk0bot client start hf:OWNER/DATASET --server {settings.address} --ca-cert ca.pem --key NODE_KEY",
            err=True,
        )
    else:
        typer.echo(f"next: zk0bot client start hf:OWNER/DATASET --server {settings.address}", err=True)
    if foreground:
        attach(
            server.wait,
            server.stop,
            f"a server process exited on its own; see {server.superlink_log} and {server.controller_log}",
        )


@app.command("allow")
def server_allow(
    public_keys: Annotated[list[Path], typer.Argument(help="Node public key files (from zk0bot client keygen).")],
    state_dir: StateDir,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the server to come up (e.g. right after it starts).")
    ] = 0,
) -> None:
    """Let the nodes holding these keys join (the server must run with TLS); a key allowed already is fine.

    Example: zk0bot server allow arm1.pub arm2.pub
    """
    keys = {path: read_public_key(path) for path in public_keys}  # all checked before any is registered
    server = Server(state_dir)
    control = server.control(wait=wait)
    if not server.settings().tls:
        control.close()
        raise DeployError("the server runs with --insecure: it admits any node; restart it with --tls to allow keys")
    try:
        for path, key in keys.items():
            try:
                node_id = control.register_node(key, name=path.stem)
            except Exception as err:  # noqa: BLE001 - Flower reports a refused key as a generic RPC error
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise DeployError(f"the server refused {path}: {reason}") from None
            typer.echo(f"{path}: " + (f"allowed as node {node_id}" if node_id else "allowed already"))
    finally:
        control.close()


@app.command("stop")
def server_stop(state_dir: StateDir) -> None:
    """Stop the server's processes (SIGTERM, then SIGKILL after 10 s)."""
    stopped = Server(state_dir).stop()
    typer.echo(f"stopped {len(stopped)} process(es)" if stopped else "the server was not running")


@app.command("log")
def server_log(state_dir: StateDir, follow: Follow = False, lines: Lines = 40) -> None:
    """Show the SuperLink, controller and session logs (rounds, rejected updates and why).

    Example: zk0bot server log -f
    """
    server = Server(state_dir)
    show([server.superlink_log, server.controller_log, server.session_log], lines, follow)
