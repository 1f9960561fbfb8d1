"""Options shared by several commands, written once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from zk0.config import ConfigError, RunConfig
from zk0.paths import ENV_HOME, app_pyproject, state_dir

StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar=ENV_HOME,
        show_envvar=True,
        default_factory=state_dir,
        help="Where pid, log, checkpoint and history files live (default: $XDG_STATE_HOME/zk0).",
    ),
]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")]
Lines = Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines to show from the end of each log.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as TOML (numbers, booleans, quoted strings), else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r} must be key=value, e.g. --set local-steps=100")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw.strip()
    return out


def validated_run_config(overrides: dict[str, Any]) -> RunConfig:
    """The declared defaults with ``overrides``, checked the way the apps will check them."""
    defaults = tomllib.loads(app_pyproject().read_text())["tool"]["flwr"]["app"]["config"]
    return RunConfig.from_run_config({**defaults, **overrides})
