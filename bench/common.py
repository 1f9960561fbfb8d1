"""Shared helpers of the benchmark scripts: the tiny config, the machine, tables and JSON results.

Imported by the scripts beside it (``uv run python bench/NAME.py`` puts ``bench/`` on ``sys.path``).
Nothing here reaches the network: the offline kit is built locally.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# The tiny model of the test suite (tests/conftest.py TINY), on top of pyproject's run config.
TINY = {"image-size": 64, "chunk-size": 10, "n-action-steps": 10, "local-steps": 3, "batch-size": 4}

# The real SmolVLA (lerobot/smolvla_base) with train_expert_only=True: counted, not downloaded (docs FACTS).
SMOLVLA_TOTAL_PARAMS = 450_046_176
SMOLVLA_TRAINABLE_PARAMS = 99_880_992


def default_kit_dir() -> Path:
    """The demo's offline kit cache (``zk0bot demo`` builds the same one)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zk0" / "offline-kit"


def parser(description: str, name: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: ``--json-out`` and ``--kit-dir``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--json-out", type=Path, default=RESULTS / f"{name}.json", help="where to write the JSON results")
    p.add_argument(
        "--kit-dir", type=Path, default=default_kit_dir(), help="offline kit cache (tiny backbone + datasets)"
    )
    return p


def kit(kit_dir: Path):
    """Build (or reuse) the offline kit: a tiny SmolVLM backbone and two synthetic SO-100 datasets."""
    from zk0.offline import build_kit

    return build_kit(kit_dir)


def tiny_run_config(backbone: Path, **overrides: Any) -> dict[str, Any]:
    """pyproject's declared run config + the tiny overrides + ``model=backbone`` + ``overrides``."""
    defaults = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return {**defaults, **TINY, "model": str(backbone), **overrides}


def _zk0bot(*args: str, env: dict[str, str], check: bool = True) -> None:
    """Run the operator's command ``zk0bot ARGS`` from this venv."""
    cmd = [str(Path(sys.executable).parent / "zk0bot"), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def federation(kit, settings: dict[str, Any], rounds: int, timeout: float) -> dict[str, Any]:
    """A real loopback federation through the operator's commands, until its session is done.

    ``zk0bot server start --min-clients 2 --rounds ROUNDS --set K=V...`` (``settings`` on top of the
    offline kit's backbone) and two ``zk0bot client start local:DATASET --threads CORES/2`` in a temporary
    state dir: flower-superlink, two flower-supernodes (each with half the cores, as if on a machine of its
    own), one ClientApp process per message (forked from the node's warm launcher). Returns the server's
    history lines and Flower's own traffic figures for the run (``ListRuns``).
    """
    from zk0 import checkpoints
    from zk0.deploy.control import FINISHED, Control
    from zk0.deploy.process import free_port
    from zk0.paths import server_dir

    state = Path(tempfile.mkdtemp(prefix="zk0-bench-federation-"))
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ZK0_HOME": str(state)}
    sets = [
        arg for key, value in {**settings, "model": str(kit.backbone)}.items() for arg in ("--set", f"{key}={value}")
    ]
    started = time.perf_counter()
    runs = []
    try:
        _zk0bot(
            "server", "start", "--state-dir", str(state), "--port", str(port), "--min-clients", "2",
            "--rounds", str(rounds), *sets, env=env,
        )  # fmt: skip
        for i, dataset in enumerate(kit.datasets[:2]):
            _zk0bot(
                "client", "start", f"local:{dataset}", "--state-dir", str(state), "--server", address,
                "--name", f"bench-{i}", "--num-workers", "0", "--device", "cpu", "--threads", str(threads), env=env,
            )  # fmt: skip
        clients_started = time.perf_counter() - started
        control = Control(address)
        try:
            deadline = time.monotonic() + timeout
            while not (runs and runs[0].status == FINISHED):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the session did not finish in {timeout:.0f} s; logs in {state}")
                time.sleep(1.0)
                runs = control.runs()
        finally:
            control.close()
        history = checkpoints.read_history(server_dir(state))
    finally:
        for i in range(2):
            _zk0bot("client", "stop", f"bench-{i}", "--state-dir", str(state), env=env, check=False)
        _zk0bot("server", "stop", "--state-dir", str(state), env=env, check=False)
    run = runs[0]
    return {
        "state_dir": str(state),
        "session_wall_seconds": time.perf_counter() - started,
        "server_and_clients_start_seconds": clients_started,
        "history": history,
        "flower_run": {
            "status": run.status,
            "sub_status": run.sub_status,
            "bytes_sent": run.bytes_sent,
            "bytes_recv": run.bytes_recv,
        },
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    import torch

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True)
    return out.stdout.strip() + ("+dirty-src" if dirty.stdout.strip() else "")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    sep = "| " + " | ".join(("-" * w) if i == 0 else ("-" * (w - 1) + ":") for i, w in enumerate(widths)) + " |"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def write_json(path: Path, name: str, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Write ``{benchmark, command args, machine, results}`` to ``path`` and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
