"""``zk0bot client start|stop|log``: a robot node training on its private dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zk0.cli.foreground import attach
from zk0.cli.logs import show
from zk0.cli.options import Follow, Lines, StateDir
from zk0.deploy import DeployError
from zk0.deploy.client import Clients, check_dataset

app = typer.Typer(help="Run robot nodes (Flower SuperNodes) on this host.", no_args_is_help=True)

Server = Annotated[
    str, typer.Option("--server", envvar="ZK0_SERVER_URL", show_envvar=True, help="The server's HOST:PORT.")
]


@app.command("start")
def client_start(
    uri: Annotated[str, typer.Argument(help="hf:OWNER/NAME[@REVISION] or local:/ABS/PATH")],
    state_dir: StateDir,
    server: Server = "127.0.0.1:8000",
    name: Annotated[str | None, typer.Option(help="Client name on this host (default: the dataset's name).")] = None,
    camera_map: Annotated[
        str, typer.Option(help="Dataset cameras onto the model's, e.g. front=camera1,wrist=camera2.")
    ] = "",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    num_workers: Annotated[int, typer.Option(min=0, help="Data loader worker processes.")] = 2,
    threads: Annotated[
        int, typer.Option(min=0, help="CPU threads for training (0: one per core); split the cores between nodes.")
    ] = 0,
    ca_cert: Annotated[
        Path | None, typer.Option(help="The server's CA certificate (ca.pem from its operator): connect with TLS.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="This node's private key (zk0bot client keygen), allowed on the server.")
    ] = None,
    foreground: Annotated[
        bool, typer.Option(help="Stay attached; stop the node on SIGTERM (systemd, containers).")
    ] = False,
) -> None:
    """Check the dataset, then join the federation in the background.

    Example: zk0bot client start hf:me/my-so100 --server fl.example.org:8000 --ca-cert ca.pem --key ~/.zk0/arm1
    """
    report = check_dataset(uri)
    clients = Clients(state_dir)
    info = clients.start(
        uri,
        server=server,
        name=name,
        camera_map=camera_map,
        device=device,
        num_workers=num_workers,
        threads=threads,
        report=report,
        ca_cert=ca_cert,
        key=key,
    )
    for warning in report.warnings:  # after start: an error stays the only line
        typer.echo(f"Warning: {warning}", err=True)
    typer.echo(
        f"client {info.name} started: {report.episodes} episodes, cameras {', '.join(report.cameras)}, "
        f"server {info.server} ({'TLS' if info.tls else 'insecure'})"
    )
    if foreground:
        attach(
            lambda: clients.wait(info.name),
            lambda: clients.stop(info.name),
            f"client {info.name} exited on its own; see {clients.log_file(info.name)}",
        )


@app.command("keygen")
def client_keygen(
    state_dir: StateDir,
    name: Annotated[str, typer.Argument(help="Key name; the files are keys/NAME and keys/NAME.pub.")] = "node",
) -> None:
    """Make this node's key pair; send the .pub file to the server operator for 'zk0bot server allow'.

    Example: zk0bot client keygen arm1
    """
    public = Clients(state_dir).keygen(name)
    typer.echo(public)
    typer.echo(f"private key: {public.with_suffix('')} (keep it here; pass it as --key)", err=True)
    typer.echo(f"next: the server operator runs 'zk0bot server allow {public.name}'", err=True)


@app.command("stop")
def client_stop(
    state_dir: StateDir,
    name: Annotated[str | None, typer.Argument(help="Client name (see zk0bot status).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every client on this host.")] = False,
) -> None:
    """Stop one client, or all of them."""
    clients = Clients(state_dir)
    if all_:
        names = clients.names()
    elif name:
        names = [name]
    else:
        raise DeployError("name a client to stop, or pass --all (see 'zk0bot status')")
    for n in names:
        pid = clients.stop(n)
        typer.echo(f"client {n}: {'stopped' if pid else 'was not running'}")


@app.command("log")
def client_log(
    state_dir: StateDir,
    name: Annotated[str | None, typer.Argument(help="Client name; optional when there is one.")] = None,
    follow: Follow = False,
    lines: Lines = 40,
) -> None:
    """Show a client's SuperNode log (training progress, errors)."""
    clients = Clients(state_dir)
    if name is None:
        names = clients.names()
        if len(names) != 1:
            raise DeployError(f"name a client: {', '.join(names) or 'none on this host'}")
        name = names[0]
    clients.info(name)
    show([clients.log_file(name)], lines, follow)
