"""``zk0bot export``: the global model as a LeRobot policy directory for a robot."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from zk0.cli.options import StateDir
from zk0.datasets import IMAGE_PREFIX
from zk0.paths import server_dir


def export(
    round: Annotated[str, typer.Argument(metavar="ROUND|latest", help="The round to export, or 'latest'.")],
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="New directory to write the policy into.")],
    stats_from: Annotated[
        str,
        typer.Option(
            "--stats-from",
            metavar="URI",
            help="Dataset whose state/action stats the policy normalises with: hf:OWNER/NAME or local:/ABS/PATH.",
        ),
    ],
    state_dir: StateDir,
    camera_map: Annotated[
        str, typer.Option(help="The dataset's cameras onto the model's, e.g. front=camera1,wrist=camera2.")
    ] = "",
) -> None:
    """Write a LeRobot policy dir (weights + pre/post processors with your dataset's stats).

    Load it with SmolVLAPolicy.from_pretrained(DIR) and make_pre_post_processors(config, pretrained_path=DIR).

    Example: zk0bot export latest ./policy --stats-from local:/data/my_so100
    """
    from zk0 import export as exporter

    out = directory.expanduser().absolute()
    with contextlib.redirect_stdout(sys.stderr):  # LeRobot prints while building; stdout is for our result
        exported, cameras = exporter.export(server_dir(state_dir), round, out, stats_from, camera_map)
    mapped = ", ".join(f"{s.removeprefix(IMAGE_PREFIX)}={d.removeprefix(IMAGE_PREFIX)}" for s, d in cameras.items())
    typer.echo(f"exported round {exported} to {out} (cameras {mapped})")
