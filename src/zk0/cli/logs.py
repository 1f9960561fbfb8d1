"""Show and follow log files (``zk0bot server log``, ``zk0bot client log``)."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import typer


def show(paths: list[Path], lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines of each file; with ``follow``, then new lines as they come."""
    many = len(paths) > 1
    offsets = {}
    for path in paths:
        if not path.exists():
            typer.echo(f"==> {path} (not written yet) <==", err=True)
            offsets[path] = 0
            continue
        if many:
            typer.echo(f"==> {path} <==")
        with open(path, "rb") as fh:
            for line in deque(fh, maxlen=lines) if lines else []:
                typer.echo(line.decode(errors="replace").rstrip("\n"))
            offsets[path] = fh.tell()
    while follow:
        for path in paths:
            if path.exists() and path.stat().st_size > offsets[path]:
                with open(path, "rb") as fh:
                    fh.seek(offsets[path])
                    chunk = fh.read()
                    offsets[path] = fh.tell()
                typer.echo(chunk.decode(errors="replace"), nl=False)
        time.sleep(0.5)
