"""Server aggregation: peak RSS and time to aggregate N client updates, each N in a fresh process.

Each child process makes N synthetic updates of ``--params`` float32 parameters split into
``--tensors`` tensors (random normal data, not zeros: Flower de-duplicates identical chunks), encoded
with ``zk0.policy.to_arrays`` in ``--wire-dtype`` as the ArrayRecords a ServerApp holds once
``grid.send_and_receive`` has returned every reply. Then it aggregates them the way
``Zk0Strategy.aggregate_train`` does: per reply ``zk0.integrity.digest`` and ``zk0.policy.from_arrays``
(decode to float32) plus the finite-value check, then the update is added to a
``zk0.strategy.RunningMean`` and dropped.

Memory is read from the child's own ``/proc/self/status``: RSS after imports (baseline), after the N
replies exist (held: what Flower's grid gives the strategy), and the peak during aggregation alone
(``VmHWM`` reset through ``/proc/self/clear_refs`` just before it), plus ``ru_maxrss`` of the whole child.
"Model" below is one model's float32 size (params x 4 bytes). Each child aggregates ``--repeats`` times
over the same replies and reports the fastest: the first pass also pays first-touch page faults of
memory the VM has never backed, which later rounds of a long-running server do not.

``--sketch`` adds, per N, a streaming variant written here for comparison only (not zk0 code): a
running float32 weighted sum into which each reply is decoded one tensor at a time and then dropped,
checked equal to zk0's result.

    uv run python bench/aggregation.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common


def _status(field: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _shapes(params: int, tensors: int) -> list[tuple[int, int]]:
    """``tensors`` 2-D shapes of width 1024 summing to about ``params``."""
    rows = max(1, params // tensors // 1024)
    return [(rows, 1024)] * tensors


def _updates(n: int, shapes, wire_dtype: str, seed: int):
    import torch

    from zk0.policy import to_arrays

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        tensors = {f"expert.layers.{j}.weight": torch.randn(shape, generator=gen) for j, shape in enumerate(shapes)}
        out.append((to_arrays(tensors, wire_dtype), float(100 + 10 * i)))  # weight: samples seen
        del tensors
    return out


def zk0_aggregate(replies):
    """What Zk0Strategy.aggregate_train does with N accepted replies: check each, add it to a running mean, drop it."""
    import torch

    from zk0.integrity import digest
    from zk0.policy import from_arrays
    from zk0.strategy import RunningMean

    mean = RunningMean()
    for record, weight in replies:
        digest(record)
        tensors = from_arrays(record)
        for value in tensors.values():
            if not torch.isfinite(value).all():
                raise ValueError("non-finite")
        mean.add(tensors, weight)
        del tensors
    return mean.result()


def streaming_sketch(replies):
    """A running weighted sum, one reply (and one tensor of it) decoded at a time; comparison only."""
    import torch
    from flwr.app import ArrayRecord

    from zk0.integrity import digest
    from zk0.policy import from_arrays

    total = sum(w for _, w in replies)
    out: dict[str, torch.Tensor] = {}
    for record, weight in replies:
        digest(record)
        for name in record:
            (value,) = from_arrays(ArrayRecord({name: record[name]})).values()
            if not torch.isfinite(value).all():
                raise ValueError("non-finite")
            if name in out:
                out[name].add_(value, alpha=weight / total)
            else:
                out[name] = value.mul_(weight / total)
            del value
    return out


def child(args) -> dict[str, Any]:
    import torch

    import zk0.integrity  # noqa: F401  (imports outside the measured phases)
    import zk0.policy  # noqa: F401
    import zk0.strategy  # noqa: F401

    torch.set_num_threads(args.threads)
    shapes = _shapes(args.params, args.tensors)
    params = sum(r * c for r, c in shapes)
    baseline = _status("VmRSS")
    replies = _updates(args.child, shapes, args.wire_dtype, args.seed)
    held = _status("VmRSS")
    fn = streaming_sketch if args.mode == "sketch" else zk0_aggregate
    reset = _reset_peak()
    times = []
    for _ in range(args.repeats):  # later repeats run on memory the VM has already backed (as in later rounds)
        start = time.perf_counter()
        result = fn(replies)
        times.append(time.perf_counter() - start)
        del result
    peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "n": args.child,
        "mode": args.mode,
        "params": params,
        "model_bytes_fp32": params * 4,
        "wire_bytes_per_update": sum(len(a.data) for a in replies[0][0].values()),
        "seconds": min(times),
        "seconds_each": times,
        "rss_baseline": baseline,
        "rss_held": held,
        "rss_peak_aggregation": peak,
        "peak_reset_supported": reset,
        "ru_maxrss_child": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if args.mode == "sketch":  # the sketch must give weighted_mean's answer
        from zk0.strategy import weighted_mean

        del replies[1:]  # keep memory bounded for the check: re-make and compare on 2 replies
        small = _updates(2, shapes, args.wire_dtype, args.seed)
        ref = zk0_aggregate(small)
        got = streaming_sketch(small)
        out["sketch_matches_weighted_mean"] = all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)
        del weighted_mean
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "aggregation")
    p.add_argument("--n", type=int, nargs="+", default=[2, 8, 16], help="numbers of client updates")
    p.add_argument("--params", type=int, default=25_000_000, help="float32 parameters per update")
    p.add_argument("--tensors", type=int, default=8, help="tensors the parameters are split into")
    p.add_argument("--wire-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="aggregations per child; the fastest is reported")
    p.add_argument("--sketch", action="store_true", help="also run the streaming sketch (comparison only)")
    p.add_argument("--child", type=int, default=0, help=argparse_hidden())
    p.add_argument("--mode", choices=("zk0", "sketch"), default="zk0", help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    # Fixed glibc mmap threshold: every large buffer is mmapped and returned to the OS when freed, so
    # RSS follows live memory (the dynamic threshold would keep freed update buffers in the heap).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    runs = []
    for mode in ("zk0", "sketch") if args.sketch else ("zk0",):
        for n in args.n:
            cmd = [sys.executable, __file__, "--child", str(n), "--mode", mode]
            cmd += ["--params", str(args.params), "--tensors", str(args.tensors), "--wire-dtype", args.wire_dtype]
            cmd += ["--threads", str(args.threads), "--seed", str(args.seed), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if proc.returncode:
                sys.exit(f"child N={n} failed:\n{proc.stderr[-3000:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            model = run["model_bytes_fp32"]
            run["growth_models"] = (run["rss_peak_aggregation"] - run["rss_held"]) / model
            run["held_models"] = (run["rss_held"] - run["rss_baseline"]) / model
            run["peak_over_baseline_models"] = (run["rss_peak_aggregation"] - run["rss_baseline"]) / model
            runs.append(run)
            print(f"{mode} N={n}: {run['seconds']:.2f} s, aggregation grows RSS by {run['growth_models']:.2f} models")

    model = runs[0]["model_bytes_fp32"]
    print(
        f"\n{runs[0]['params']:,} float32 params per update in {args.tensors} tensors "
        f"(model = {common.human_bytes(model)}), wire dtype {args.wire_dtype}, {args.threads} torch thread(s)\n"
    )
    rows = [
        (
            r["mode"],
            r["n"],
            r["seconds"],
            r["seconds_each"][0],
            common.human_bytes(r["rss_held"] - r["rss_baseline"]),
            common.human_bytes(r["rss_peak_aggregation"]),
            common.human_bytes(r["rss_peak_aggregation"] - r["rss_held"]),
            f"{r['growth_models']:.2f}",
            f"{r['growth_models'] / r['n']:.2f}",
            f"{r['peak_over_baseline_models']:.2f}",
        )
        for r in runs
    ]
    headers = (
        "aggregator",
        "N",
        "seconds (best)",
        "seconds (first)",
        "replies held",
        "peak RSS",
        "growth while aggregating",
        "growth (models)",
        "growth/N (models)",
        "peak over baseline (models)",
    )
    print(common.table(headers, rows))
    print("\ntarget: growth while aggregating <= 1 model regardless of N")
    common.write_json(args.json_out, "aggregation", args, {"runs": runs})


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
