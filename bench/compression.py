"""Update compression: eval loss and bytes after N rounds, int8 deltas against uncompressed updates.

Two real loopback federations (``common.federation``: ``zk0bot server start`` and two
``zk0bot client start`` on the offline kit's tiny SmolVLA and synthetic SO-100 datasets), identical
but for ``update-compression``: ``none`` (float32 updates) and ``int8`` (int8 deltas to the global
model, one scale per tensor). Seeds are equal, so both see the same batches and the same flow-matching
noise: the difference in their loss curves is the compression's. Eval loss is the federation's own
(each node's held-out episodes, weighted by samples, as in the server's ``history.jsonl``); update
bytes are the payload each client sent per round, and Flower's own count of bytes the SuperLink
received for the run.

    uv run python bench/compression.py
"""

from __future__ import annotations

from typing import Any

import common

TOLERANCE = 0.02  # the bound: eval loss with int8 within 2 % of uncompressed


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "compression")
    p.add_argument("--rounds", type=int, default=5, help="federated rounds")
    p.add_argument("--local-steps", type=int, default=5, help="optimizer steps per client per round")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for each session")
    args = p.parse_args()

    kit = common.kit(args.kit_dir)
    runs: dict[str, Any] = {}
    for compression in ("none", "int8"):
        settings = {**common.TINY, "local-steps": args.local_steps, "update-compression": compression}
        print(f"federation with update-compression={compression} ...", flush=True)
        fed = common.federation(kit, settings, args.rounds, args.timeout)
        lines = {line["round"]: line for line in fed["history"]}
        runs[compression] = {
            "eval_loss": {r: (lines[r].get("evaluate") or {}).get("eval-loss") for r in sorted(lines)},
            "update_bytes": {r: [c["payload-bytes"] for c in lines[r].get("clients", [])] for r in sorted(lines)},
            "flower_run": fed["flower_run"],
            "session_wall_seconds": fed["session_wall_seconds"],
        }

    plain, int8 = runs["none"], runs["int8"]
    rows = []
    for r in sorted(plain["eval_loss"]):
        a, b = plain["eval_loss"][r], int8["eval_loss"].get(r)
        rel = (b - a) / a if a and b is not None else None
        up_a = sum(plain["update_bytes"][r]) or None
        up_b = sum(int8["update_bytes"].get(r, [])) or None
        rows.append((r, f"{a:.6f}", f"{b:.6f}", f"{rel:+.2e}" if rel is not None else "-", up_a or "-", up_b or "-"))
    headers = (
        "round",
        "eval loss, none",
        "eval loss, int8",
        "int8 vs none (relative)",
        "update bytes up, none",
        "int8",
    )
    print(f"\n2 clients, {args.rounds} rounds, {args.local_steps} local steps, tiny SmolVLA:\n")
    print(common.table(headers, rows))
    final = args.rounds
    rel = (int8["eval_loss"][final] - plain["eval_loss"][final]) / plain["eval_loss"][final]
    bytes_ratio = sum(map(sum, int8["update_bytes"].values())) / sum(map(sum, plain["update_bytes"].values()))
    flower_ratio = int8["flower_run"]["bytes_recv"] / plain["flower_run"]["bytes_recv"]
    print(
        f"\nafter {final} rounds: int8 eval loss {rel:+.2e} relative to uncompressed "
        f"(bound: within {TOLERANCE:.0%}); "
        f"update bytes x{bytes_ratio:.3f}; bytes the SuperLink received (Flower's count) x{flower_ratio:.3f}"
    )
    results = {
        "runs": runs,
        "final_round": final,
        "final_relative_eval_loss": rel,
        "within_tolerance": abs(rel) <= TOLERANCE,
        "update_bytes_ratio": bytes_ratio,
        "flower_bytes_received_ratio": flower_ratio,
    }
    common.write_json(args.json_out, "compression", args, results)


if __name__ == "__main__":
    main()
