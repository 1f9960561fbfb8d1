"""Server aggregation: peak memory and time of one round's aggregation of N client updates, each N in a fresh process.

Each child process builds a ``zk0.strategy.Zk0Strategy`` holding a global model of ``--params``
float32 parameters in ``--tensors`` tensors, then runs one round's ``aggregate_train`` over N
synthetic updates (random normal data, not zeros: Flower de-duplicates identical chunks), each a
real train reply as zk0's ClientApp makes it (packed ArrayRecord, metrics, digest), in one of three
encodings: ``float32`` and ``bfloat16`` (``wire-dtype``) and ``int8`` (``update-compression=int8``:
int8 deltas to the global model, one scale per tensor). Two ways to receive them:

- ``held``: all N replies exist before aggregation starts, as Flower's ``grid.send_and_receive``
  returns them (what zk0 did before streaming), then ``aggregate_train`` runs over the list.
- ``streaming``: what zk0 does now. ``zk0.streaming.StreamingGrid`` pulls one reply at a time from
  a grid that makes each reply when it is pulled (tensor by tensor, as bytes arrive off the wire),
  and ``aggregate_train`` checks it, adds it to the running sum and drops it before the next pull.

Memory is the child's own (``/proc/self/status``): the baseline is RSS once the strategy holds the
global model, just before the round's replies start to exist; the peak is ``VmHWM`` (reset through
``/proc/self/clear_refs`` at the baseline) over receiving and aggregating. Growth = peak - baseline,
in models (one model = params x 4 bytes). Children run with a fixed glibc mmap threshold so RSS
follows live memory. Time is ``aggregate_train`` alone (making the synthetic replies is excluded),
the faster of ``--repeats`` rounds (the first also pays the VM's first-touch page faults).

    uv run python bench/aggregation.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

ENCODINGS = ("float32", "bfloat16", "int8")


def _status(field: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _strategy(args, directory: Path):
    import torch

    from zk0.config import RunConfig
    from zk0.policy import to_arrays
    from zk0.strategy import Zk0Strategy

    settings = common.tiny_run_config(Path("unused-model"), **{"num-server-rounds": 1000, "checkpoint-every": 0})
    settings |= {"min-clients": 1, "fraction-evaluate": 0.0}
    if args.encoding == "int8":
        settings["update-compression"] = "int8"
    else:
        settings["wire-dtype"] = args.encoding
    strategy = Zk0Strategy(RunConfig.from_run_config(settings), directory)
    rows = max(1, args.params // args.tensors // 1024)
    gen = torch.Generator().manual_seed(args.seed)
    glob = {f"expert.layers.{j}.weight": torch.randn(rows, 1024, generator=gen) for j in range(args.tensors)}
    return strategy, to_arrays(glob, "float32"), rows * 1024 * args.tensors


def _start_round(strategy, arrays) -> None:
    """What configure_train does with the global model (held as Flower's round loop holds it)."""
    from flwr.app import ConfigRecord

    strategy._encode(arrays, ConfigRecord())
    strategy._round = {"round": 1}


class SyntheticNodes:
    """The grid side: each pull makes one node's train reply, tensor by tensor, from a seeded generator."""

    def __init__(self, strategy, encoding: str, seed: int) -> None:
        self.strategy = strategy
        self.encoding = encoding
        self.seed = seed
        self.pending: dict[str, int] = {}
        self.making = 0.0  # seconds spent making replies, taken off the aggregation time

    def push_messages(self, messages):
        self.pending = {f"m{i}": i for i, _ in enumerate(messages)}
        return list(self.pending)

    def pull_messages(self, message_ids):
        return [self.reply(self.pending.pop(mid)) for mid in message_ids]

    def reply(self, i: int):
        import torch
        from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

        from zk0.compression import encode_update
        from zk0.integrity import digest
        from zk0.packing import drain, pack

        start = time.perf_counter()
        gen = torch.Generator().manual_seed(self.seed + 1 + i)
        record = ArrayRecord()
        for name, base in self.strategy._base.items():
            trained = {name: base + 0.01 * torch.randn(base.shape, generator=gen)}
            compression = "int8" if self.encoding == "int8" else "none"
            wire = "float32" if self.encoding == "int8" else self.encoding
            record[name] = encode_update(trained, {name: base}, compression, wire)[name]
            del trained
        claim = digest(record)
        content = RecordDict(
            {
                "arrays": pack(drain(record)),  # packed as the ClientApp sends it (tensors over 5 MiB travel alone)
                "metrics": MetricRecord({"num-examples": 100 + 10 * i, "train-loss": 1.0}),
                "integrity": ConfigRecord({"arrays-digest": claim}),
            }
        )
        ins = Message(content=RecordDict(), dst_node_id=i + 1, message_type="train")
        msg = Message(content=content, reply_to=ins)
        self.making += time.perf_counter() - start
        return msg


def child(args) -> dict[str, Any]:
    import torch
    from flwr.app import Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from zk0.streaming import StreamingGrid

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # what a ServerApp process has
    torch.set_num_threads(args.threads)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        strategy, start_arrays, params = _strategy(args, Path(tmp))
        for _ in range(args.repeats):
            _start_round(strategy, start_arrays)
            nodes = SyntheticNodes(strategy, args.encoding, args.seed)
            messages = [Message(content=RecordDict(), dst_node_id=i + 1, message_type="train") for i in range(args.n)]
            baseline = _status("VmRSS")
            _reset_peak()
            if args.mode == "held":
                nodes.push_messages(messages)
                replies = [nodes.reply(i) for i in range(args.n)]
                held = _status("VmRSS")
                start = time.perf_counter()
                arrays, _ = strategy.aggregate_train(1, replies)
                seconds = time.perf_counter() - start
            else:
                replies = StreamingGrid(nodes, poll=0.0).send_and_receive(messages, timeout=None)
                held = _status("VmRSS")
                start = time.perf_counter()
                arrays, _ = strategy.aggregate_train(1, replies)
                seconds = time.perf_counter() - start - nodes.making
            peak = _status("VmHWM")
            wire = strategy._round["bytes-received"] // args.n
            del replies, arrays
            runs.append({"seconds": seconds, "baseline": baseline, "held": held, "peak": peak, "wire": wire})
    best = min(runs, key=lambda r: r["seconds"])
    return {
        "mode": args.mode,
        "encoding": args.encoding,
        "n": args.n,
        "params": params,
        "model_bytes_fp32": params * 4,
        "wire_bytes_per_update": best["wire"],
        "seconds": best["seconds"],
        "seconds_each": [r["seconds"] for r in runs],
        "rss_baseline": best["baseline"],
        "rss_replies_held": best["held"],
        "rss_peak": max(r["peak"] for r in runs),
        "growth_bytes": max(r["peak"] - r["baseline"] for r in runs),
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "aggregation")
    p.add_argument("--n", type=int, nargs="+", default=[2, 8, 16], help="numbers of client updates")
    p.add_argument("--params", type=int, default=25_000_000, help="float32 parameters of the model")
    p.add_argument("--tensors", type=int, default=8, help="tensors the parameters are split into")
    p.add_argument("--encodings", nargs="+", choices=ENCODINGS, default=list(ENCODINGS))
    p.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="rounds per child; the fastest is reported")
    p.add_argument("--no-held", action="store_true", help="skip the all-replies-held comparison (float32)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("held", "streaming"), default="streaming", help=argparse.SUPPRESS)
    p.add_argument("--encoding", choices=ENCODINGS, default="float32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        (n,) = args.n
        args.n = n
        print(json.dumps(child(args)))
        return

    # Fixed glibc mmap threshold: every large buffer is mmapped and returned to the OS when freed, so
    # RSS follows live memory (the dynamic threshold would keep freed update buffers in the heap).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    plan = [] if args.no_held else [("held", "float32")]
    plan += [("streaming", e) for e in args.encodings]
    runs = []
    for mode, encoding in plan:
        for n in args.n:
            cmd = [sys.executable, __file__, "--child", "--mode", mode, "--encoding", encoding, "--n", str(n)]
            cmd += ["--params", str(args.params), "--tensors", str(args.tensors), "--threads", str(args.threads)]
            cmd += ["--seed", str(args.seed), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if proc.returncode:
                sys.exit(f"child {mode} {encoding} N={n} failed:\n{proc.stderr[-3000:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run["growth_models"] = run["growth_bytes"] / run["model_bytes_fp32"]
            run["wire_models"] = run["wire_bytes_per_update"] / run["model_bytes_fp32"]
            runs.append(run)
            print(f"{mode} {encoding} N={n}: {run['seconds']:.2f} s, memory grows by {run['growth_models']:.2f} models")

    model = runs[0]["model_bytes_fp32"]
    print(
        f"\n{runs[0]['params']:,} parameters (one float32 model = {common.human_bytes(model)}), "
        f"{args.tensors} tensors, {args.threads} torch thread(s)\n"
    )
    rows = [
        (
            r["mode"],
            r["encoding"],
            r["n"],
            common.human_bytes(r["wire_bytes_per_update"]),
            f"{r['seconds']:.2f}",
            common.human_bytes(r["growth_bytes"]),
            f"{r['growth_models']:.2f}",
            f"{r['growth_models'] - r['wire_models']:.2f}",
        )
        for r in runs
    ]
    headers = (
        "receive",
        "update",
        "N",
        "update size",
        "seconds (best)",
        "peak growth",
        "growth (models)",
        "growth less one update (models)",
    )
    print(common.table(headers, rows))
    print("\ntarget: memory grows by at most one model's worth regardless of N")
    common.write_json(args.json_out, "aggregation", args, {"runs": runs})


if __name__ == "__main__":
    main()
