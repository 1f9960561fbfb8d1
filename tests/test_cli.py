"""zk0bot: the README's demo command end to end, and the CLI's help."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zk0.cli import app

ZK0BOT = str(Path(sys.executable).parent / "zk0bot")


def test_help_lists_the_demo():
    result = CliRunner().invoke(app, ["--help"])

    assert result.exit_code == 0
    assert "demo" in result.output


def test_demo_rejects_zero_rounds_without_a_traceback():
    result = subprocess.run([ZK0BOT, "demo", "--rounds", "0"], capture_output=True, text=True, check=False)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--rounds" in result.stderr


@pytest.mark.slow
def test_demo_runs_a_round_offline_and_stops_what_it_started(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)}

    result = subprocess.run([ZK0BOT, "demo", "--rounds", "1", "--local-steps", "2"], env=env,
                            capture_output=True, text=True, timeout=900, check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 1/1: 2 updates" in result.stderr
    assert "zk0 demo: 1 rounds" in result.stdout
    assert (tmp_path / "cache" / "zk0" / "offline-kit" / "backbone").is_dir()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == "", f"processes left running: {leftover.stdout}"
