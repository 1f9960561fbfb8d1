"""Fixed federated overhead per round on loopback, and where a ClientApp message's time goes.

Part 1 (phases): fresh Python processes, one after another, time what every ClientApp message pays
before it trains, since Flower starts one ClientApp process per message: interpreter start,
``import zk0.client_app``, then in one process step by step what ``zk0.client_app.fit`` does (imports,
dataset metadata and checks, SmolVLA build, loading the received weights, LeRobot's preprocessor,
opening the dataset, the episode digests of ``describe_data``, the first batch, encoding the reply),
once cold (a fresh process, as Flower starts it) and once warm (a fork of a process that imported
what zk0's warm launcher imports, as ``zk0bot client start`` runs each message).

Part 2 (federation): a real loopback federation through the operator's commands,
``zk0bot server start`` and two ``zk0bot client start`` (flower-superlink, two flower-supernodes,
tiny model, offline kit) in a temporary state dir, until the session's rounds are done. From the
server's ``history.jsonl``: round wall time ("seconds": configure_train to the end of the round,
its evaluation included when it sends one) minus the slowest client's own work in it: its
"train-seconds", plus the "eval-seconds" of the model it evaluated first (the previous round's,
measured inside the same train message), plus, in a session's last round, the evaluate message's
"eval-seconds". Also Flower's own traffic figures (``ListRuns``: bytes sent / received by the
SuperLink for the run).

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
from zk0.packing import drain, pack
reply = to_arrays(trainable_state(policy), cfg.wire_dtype); digest(reply); pack(drain(reply))
mark("encode + digest + pack reply")
print(json.dumps(out))
"""

# The same steps in a fork of a process that imported what zk0's warm launcher imports (zk0.deploy.warm),
# as each message runs under ``zk0bot client start``; the launcher's one-time import cost comes last.
WARM_CHILD = r"""
import importlib, json, os, sys, time
from zk0.deploy.warm import PRELOAD
start = time.perf_counter()
for name in PRELOAD:
    importlib.import_module(name)
preload = time.perf_counter() - start
sys.stdout.flush()
if os.fork() == 0:
    exec(compile(sys.argv.pop(1), "phases", "exec"))
    sys.stdout.flush()
    os._exit(0)
os.wait()
print(json.dumps({"launcher imports (once per client)": preload}))
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
    for key, cmd in (("fit steps", [py, "-c", PHASES_CHILD]), ("fit steps (warm fork)", [py, "-c", WARM_CHILD])):
        runs = []
        for _ in range(repeats):
            args = [*cmd, *([PHASES_CHILD] if key.endswith("(warm fork)") else []), json.dumps(run_config)]
            proc = subprocess.run([*args, str(kit.datasets[0])], check=True, env=env, capture_output=True, text=True)
            lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
            runs.append({k: v for line in lines for k, v in line.items()})
        result[key] = runs
    return result


def federation(kit, rounds: int, local_steps: int, timeout: float) -> dict[str, Any]:
    settings = {**common.TINY, "local-steps": local_steps}
    fed = common.federation(kit, settings, rounds, timeout)
    rows = []
    history = fed.pop("history")
    eval_seconds = {line["round"]: _eval_seconds(line) for line in history}
    for line in history:
        if line["round"] == 0:
            continue
        clients = line.get("clients") or []
        # The work inside a round: each node evaluates the model it received (round r-1's, when due),
        # then trains; the session's last round also evaluates its own model in a second message.
        work = max(
            (
                c.get("train-seconds", 0.0) + eval_seconds.get(line["round"] - 1, {}).get(c["node-id"], 0.0)
                for c in clients
            ),
            default=0.0,
        )
        last = line["round"] == rounds
        if last:
            work += max(eval_seconds.get(line["round"], {}).values(), default=0.0)
        rows.append(
            {
                "round": line["round"],
                "messages": 2 if last else 1,
                "seconds": line["seconds"],
                "client_work_seconds": work,
                "client_train_seconds": [c.get("train-seconds") for c in clients],
                "overhead_seconds": line["seconds"] - work,
                "payload_bytes_up": sum(c.get("payload-bytes", 0) for c in clients),
                "bytes_sent": line.get("bytes-sent"),
                "bytes_received": line.get("bytes-received"),
            }
        )
    fed["rounds"] = rows
    return fed


def _eval_seconds(line: dict[str, Any]) -> dict[int, float]:
    """Each node's seconds evaluating this round's model (its history line's eval-clients)."""
    return {c["node-id"]: c.get("eval-seconds", 0.0) for c in line.get("eval-clients") or []}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "round_overhead")
    p.add_argument("--rounds", type=int, default=4, help="federated rounds")
    p.add_argument("--local-steps", type=int, default=3, help="optimizer steps per client per round")
    p.add_argument("--repeats", type=int, default=2, help="repeats of each phase measurement")
    p.add_argument("--timeout", type=float, default=480, help="seconds to wait for the session")
    p.add_argument("--skip-federation", action="store_true", help="only measure the phases")
    p.add_argument("--skip-phases", action="store_true", help="only run the federation")
    args = p.parse_args()

    kit = common.kit(args.kit_dir)
    run_config = common.tiny_run_config(kit.backbone, **{"local-steps": args.local_steps})
    results: dict[str, Any] = {}
    if not args.skip_phases:
        results["phases"] = _report_phases(kit, run_config, args.repeats)
    if not args.skip_federation:
        results["federation"] = _report_federation(kit, args)
    common.write_json(args.json_out, "round_overhead", args, results)


def _report_phases(kit, run_config: dict[str, Any], repeats: int) -> dict[str, Any]:
    ph = phases(kit, run_config, repeats)
    steps = {key: ph.pop(key) for key in ("fit steps", "fit steps (warm fork)")}
    rows = [(name, min(v), max(v), "", "") for name, v in ph.items() if isinstance(v, list)]
    cold, warm = steps["fit steps"], steps["fit steps (warm fork)"]
    for name in cold[0]:
        rows.append((f"  {name}", min(r[name] for r in cold), max(r[name] for r in cold), *_span(warm, [name])))
    totals = [sum(r[name] for name in cold[0]) for r in cold]
    rows.append(("  total before training", min(totals), max(totals), *_span(warm, list(cold[0]))))
    once = "launcher imports (once per client)"
    rows.append((once, "", "", *_span(warm, [once])))
    ph.update(steps)
    print("What one ClientApp message pays before it trains (seconds): cold process, or warm fork:\n")
    print(f"PYTHONDONTWRITEBYTECODE={ph['PYTHONDONTWRITEBYTECODE']!r}")
    print(common.table(("phase", "cold min s", "cold max s", "warm fork min s", "warm fork max s"), rows))
    return ph


def _span(runs: list[dict[str, float]], names: list[str]) -> tuple[float, float]:
    """Min and max over ``runs`` of the summed ``names``."""
    sums = [sum(r[name] for name in names) for r in runs]
    return min(sums), max(sums)


def _report_federation(kit, args) -> dict[str, Any]:
    fed = federation(kit, args.rounds, args.local_steps, args.timeout)
    print(f"\nLoopback federation, 2 clients, {args.rounds} rounds, {args.local_steps} local steps:\n")
    table_rows = [
        (
            r["round"],
            "train (+ eval of the model received)" if r["messages"] == 1 else "train, then eval of the new model",
            r["seconds"],
            r["client_work_seconds"],
            r["overhead_seconds"],
            r["payload_bytes_up"],
        )
        for r in fed["rounds"]
    ]
    headers = ("round", "messages per node", "round s", "slowest client's work s", "overhead s", "update bytes up")
    print(common.table(headers, table_rows))
    one = [r["overhead_seconds"] for r in fed["rounds"] if r["messages"] == 1]
    if one:
        fed["median_overhead_seconds"] = statistics.median(one)
        median = fed["median_overhead_seconds"]
        print(f"\nmedian overhead per round (one message per node): {median:.1f} s (target <= 12 s)")
    print(f"Flower run traffic: {fed['flower_run']}")
    return fed


if __name__ == "__main__":
    main()
