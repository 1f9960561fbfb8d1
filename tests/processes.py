"""Drive the real ``zk0bot`` executable in subprocesses, as an operator would."""

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY

ZK0BOT = str(Path(sys.executable).parent / "zk0bot")


def zk0bot(*args: str, state: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ZK0BOT, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once: a machine losing power, as far as Flower can tell."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=10)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def status(state: Path) -> dict:
    return json.loads(zk0bot("status", "--json", state=state).stdout)


def tiny_sets(backbone: Path, **overrides) -> list[str]:
    """``--set`` options for a tiny, quick session on the offline kit's backbone."""
    settings = {**TINY, "local-steps": 2, "model": json.dumps(str(backbone)), **overrides}
    return [f"--set={k}={v}" for k, v in settings.items()]


def leftover(marker: Path) -> str:
    """Command lines of processes still running that mention ``marker`` (a test's tmp dir)."""
    found = subprocess.run(["pgrep", "-af", str(marker)], capture_output=True, text=True, check=False)
    return found.stdout.strip()
