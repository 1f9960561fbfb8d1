"""Fixed federated overhead per round on loopback, and where a ClientApp message's time goes.

Part 1 (phases): fresh Python processes, one after another, time what every ClientApp message pays
before it trains, since Flower starts one ClientApp process per message: interpreter start,
``import zk0.client_app``, then in one process step by step what ``zk0.client_app.fit`` does (imports,
dataset metadata and checks, SmolVLA build, loading the received weights, LeRobot's preprocessor,
opening the dataset, the episode digests of ``describe_data``, the first batch, encoding the reply).

Part 2 (federation): a real loopback federation through the operator's commands,
``zk0bot server start`` and two ``zk0bot client start`` (flower-superlink, two flower-supernodes,
tiny model, offline kit) in a temporary state dir, until the session's rounds are done. From the
server's ``history.jsonl``: round wall time ("seconds": configure_train to the end of the round's
evaluation) minus the slowest client's pure training time ("train-seconds"), and Flower's own
traffic figures (``ListRuns``: bytes sent / received by the SuperLink for the run).

This takes about 4 minutes and both cores; run nothing else meanwhile.

    uv run python bench/round_overhead.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

PHASES_CHILD = r"""
import json, sys, time
t = time.perf_counter()
out = {}
def mark(name):
    global t
    now = time.perf_counter(); out[name] = now - t; t = now
import torch; mark("import torch")
import flwr.app, flwr.clientapp; mark("import flwr")
import zk0.client_app; mark("import zk0.client_app (rest)")
from zk0.config import NodeConfig, RunConfig
from zk0.datasets import (DatasetSource, camera_map, check_so100, episode_digests, normalisation_stats,
                          rename_cameras, split_episodes)
from zk0.integrity import digest
from zk0.policy import build_policy, load_trainable, to_arrays, trainable_state
from zk0.task import make_loader
run_config, dataset = json.loads(sys.argv[1]), sys.argv[2]
import lerobot.policies.smolvla.modeling_smolvla, lerobot.policies.factory, lerobot.datasets.lerobot_dataset
mark("import lerobot (lazy in zk0)")
cfg = RunConfig.from_run_config(run_config)
source = DatasetSource.parse("local:" + dataset)
meta = source.metadata()
cameras = check_so100(meta, state_dim=cfg.state_dim, action_dim=cfg.action_dim)
mapping = camera_map(cameras, cfg.camera_features, "")
train_eps, _ = split_episodes(meta.total_episodes, cfg.eval_fraction, cfg.seed)
mark("dataset metadata + checks")
policy = build_policy(cfg, "cpu"); mark("build SmolVLA")
load_trainable(policy, {k: v.clone() for k, v in trainable_state(policy).items()}); mark("load received weights")
from lerobot.policies.factory import make_pre_post_processors
pre, _ = make_pre_post_processors(policy.config, dataset_stats=normalisation_stats(meta)); mark("preprocessor")
from lerobot.datasets.factory import resolve_delta_timestamps
ds = source.open(train_eps, resolve_delta_timestamps(policy.config, meta)); mark("open dataset")
episode_digests(ds); mark("episode digests (describe_data)")
loader = make_loader(ds, batch_size=cfg.batch_size, shuffle=True, seed=0, num_workers=0)
batch = pre(rename_cameras(next(iter(loader)), mapping)); mark("first batch + preprocess")
digest(to_arrays(trainable_state(policy), cfg.wire_dtype)); mark("encode + digest reply")
print(json.dumps(out))
"""


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


IMPORTS = (
    "import torch, flwr.app, flwr.clientapp, zk0.client_app, lerobot.policies.smolvla.modeling_smolvla, "
    "lerobot.policies.factory, lerobot.datasets.lerobot_dataset"
)


def phases(kit, run_config: dict[str, Any], repeats: int) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    py = sys.executable
    result: dict[str, Any] = {
        "python -c pass": [_wall([py, "-c", "pass"], env) for _ in range(repeats)],
        "python -c 'import zk0.client_app'": [_wall([py, "-c", "import zk0.client_app"], env) for _ in range(repeats)],
        "all a message imports (this environment)": [_wall([py, "-c", IMPORTS], env) for _ in range(repeats)],
    }
    # The same imports from compiled bytecode, cached outside the venv (which stays untouched): the venv
    # holds no .pyc when uv installed it without --compile-bytecode, and PYTHONDONTWRITEBYTECODE=1 (or a
    # read-only venv) means every ClientApp process compiles every module from source again.
    with tempfile.TemporaryDirectory(prefix="zk0-bench-pyc-") as cache:
        cached = {**env, "PYTHONPYCACHEPREFIX": cache}
        populate = {k: v for k, v in cached.items() if k != "PYTHONDONTWRITEBYTECODE"}
        _wall([py, "-c", IMPORTS], populate)
        result["all a message imports (bytecode cached)"] = [_wall([py, "-c", IMPORTS], cached) for _ in range(repeats)]
    result["PYTHONDONTWRITEBYTECODE"] = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    steps = []
    for _ in range(repeats):
        proc = subprocess.run(
            [py, "-c", PHASES_CHILD, json.dumps(run_config), str(kit.datasets[0])],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
        steps.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result["fit steps"] = steps
    return result


def _zk0bot(*args: str, env: dict[str, str], check: bool = True) -> None:
    """Run the operator's command ``zk0bot ARGS`` from this venv."""
    cmd = [str(Path(sys.executable).parent / "zk0bot"), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def federation(kit, rounds: int, local_steps: int, timeout: float, pycache: str = "") -> dict[str, Any]:
    from zk0 import checkpoints
    from zk0.deploy.control import FINISHED, Control
    from zk0.deploy.process import free_port
    from zk0.paths import server_dir

    state = Path(tempfile.mkdtemp(prefix="zk0-bench-round-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ZK0_HOME": str(state)}
    if pycache:  # every process of the federation (ClientApps included) reads compiled bytecode from here
        env["PYTHONPYCACHEPREFIX"] = pycache
        populate = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([sys.executable, "-c", IMPORTS + ", flwr.server, flwr.serverapp, zk0.server_app"], env=populate)
    settings = {**common.TINY, "local-steps": local_steps, "model": str(kit.backbone)}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    runs = []
    try:
        _zk0bot(
            "server", "start", "--state-dir", str(state), "--port", str(port), "--min-clients", "2",
            "--rounds", str(rounds), *sets, env=env,
        )  # fmt: skip
        for i, dataset in enumerate(kit.datasets[:2]):
            _zk0bot(
                "client", "start", f"local:{dataset}", "--state-dir", str(state), "--server", address,
                "--name", f"bench-{i}", "--num-workers", "0", "--device", "cpu", env=env,
            )  # fmt: skip
        clients_started = time.perf_counter() - started
        control = Control(address)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                history = checkpoints.read_history(server_dir(state))
                runs = control.runs()
                if runs and runs[0].status == FINISHED:
                    break
                time.sleep(1.0)
            else:
                raise RuntimeError(f"the session did not finish in {timeout:.0f} s; logs in {state}")
        finally:
            control.close()
        history = checkpoints.read_history(server_dir(state))
    finally:
        for i in range(2):
            _zk0bot("client", "stop", f"bench-{i}", "--state-dir", str(state), env=env, check=False)
        _zk0bot("server", "stop", "--state-dir", str(state), env=env, check=False)
    rows = []
    for line in history:
        clients = line.get("clients") or []
        train = max((c.get("train-seconds", 0.0) for c in clients), default=0.0)
        rows.append(
            {
                "round": line["round"],
                "seconds": line["seconds"],
                "max_client_train_seconds": train,
                "client_train_seconds": [c.get("train-seconds") for c in clients],
                "overhead_seconds": line["seconds"] - train,
                "evaluated": bool(line.get("evaluate")),
                "payload_bytes_up": sum(c.get("payload-bytes", 0) for c in clients),
                "bytes_sent": line.get("bytes-sent"),
                "bytes_received": line.get("bytes-received"),
            }
        )
    run = runs[0] if runs else None
    return {
        "state_dir": str(state),
        "session_wall_seconds": time.perf_counter() - started,
        "server_and_clients_start_seconds": clients_started,
        "rounds": rows,
        "flower_run": {
            "status": run.status,
            "sub_status": run.sub_status,
            "bytes_sent": run.bytes_sent,
            "bytes_recv": run.bytes_recv,
        }
        if run
        else None,  # fmt: skip
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "round_overhead")
    p.add_argument("--rounds", type=int, default=2, help="federated rounds")
    p.add_argument("--local-steps", type=int, default=3, help="optimizer steps per client per round")
    p.add_argument("--repeats", type=int, default=2, help="repeats of each phase measurement")
    p.add_argument("--timeout", type=float, default=480, help="seconds to wait for the session")
    p.add_argument("--skip-federation", action="store_true", help="only measure the phases")
    p.add_argument("--skip-phases", action="store_true", help="only run the federation")
    p.add_argument(
        "--bytecode-cache",
        action="store_true",
        help="run the federation with a populated PYTHONPYCACHEPREFIX (compiled bytecode outside the venv)",
    )
    args = p.parse_args()

    kit = common.kit(args.kit_dir)
    run_config = common.tiny_run_config(kit.backbone, **{"local-steps": args.local_steps})
    results: dict[str, Any] = {}
    if not args.skip_phases:
        results["phases"] = _report_phases(kit, run_config, args.repeats)
    if not args.skip_federation:
        if args.bytecode_cache:
            with tempfile.TemporaryDirectory(prefix="zk0-bench-pyc-") as cache:
                results["federation"] = _report_federation(kit, args, cache)
        else:
            results["federation"] = _report_federation(kit, args, "")
    common.write_json(args.json_out, "round_overhead", args, results)


def _report_phases(kit, run_config: dict[str, Any], repeats: int) -> dict[str, Any]:
    ph = phases(kit, run_config, repeats)
    rows = [(name, min(v), max(v)) for name, v in ph.items() if isinstance(v, list) and name != "fit steps"]
    steps = ph["fit steps"]
    rows += [(f"  {name}", min(s[name] for s in steps), max(s[name] for s in steps)) for name in steps[0]]
    total = [sum(s.values()) for s in steps]
    rows.append(("  total before training (one process)", min(total), max(total)))
    print("What one ClientApp message pays before it trains (fresh process each; seconds):\n")
    print(f"PYTHONDONTWRITEBYTECODE={ph['PYTHONDONTWRITEBYTECODE']!r}")
    print(common.table(("phase", "min s", "max s"), rows))
    return ph


def _report_federation(kit, args, pycache: str) -> dict[str, Any]:
    fed = federation(kit, args.rounds, args.local_steps, args.timeout, pycache)
    fed["bytecode_cache"] = bool(pycache)
    print(
        f"\nLoopback federation, 2 clients, {args.rounds} rounds, {args.local_steps} local steps"
        f"{', bytecode cached' if pycache else ''}:\n"
    )
    table_rows = [
        (
            r["round"],
            "eval only (untrained baseline)" if r["round"] == 0 else "train + eval" if r["evaluated"] else "train",
            r["seconds"],
            r["max_client_train_seconds"],
            r["overhead_seconds"],
            r["payload_bytes_up"],
        )
        for r in fed["rounds"]
    ]
    headers = ("round", "messages", "round s", "slowest client train s", "overhead s", "update bytes up")
    print(common.table(headers, table_rows))
    trained = [r["overhead_seconds"] for r in fed["rounds"] if r["round"] > 0]
    if trained:
        fed["median_overhead_seconds"] = statistics.median(trained)
        print(f"\nmedian overhead per trained round: {statistics.median(trained):.1f} s (target <= 12 s)")
    if fed["flower_run"]:
        print(f"Flower run traffic: {fed['flower_run']}")
    return fed


if __name__ == "__main__":
    main()
