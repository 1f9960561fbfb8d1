"""Wire bytes per client per round and direction: upstream's full fp32 state vs zk0's trainable-only payloads.

Three schemes, each sent server -> client (global model) and client -> server (update) once per round:

- upstream: upstream zk0 sends SmolVLA's whole state_dict in float32 both ways;
- zk0 fp32: zk0 sends only the trainable parameters (train_expert_only), float32;
- zk0 bf16: the same with ``wire-dtype=bfloat16``.

Tiny config (the test suite's tiny SmolVLA from the offline kit): MEASURED from real records, both the
payload (sum of ``Array.data`` lengths from ``zk0.policy.to_arrays``) and the protobuf the record
serialises to (``flwr.common.serde.array_record_to_proto(...).ByteSize()``; Flower then moves arrays
over 5 MiB chunks, so the bytes on the socket add a little framing per chunk).

Real SmolVLA (lerobot/smolvla_base): COMPUTED from parameter counts (450,046,176 total, 99,880,992
trainable); no download. Non-parameter buffers, if any, are not counted there.

    uv run python bench/wire_bytes.py
"""

from __future__ import annotations

from typing import Any

import common


def _record_sizes(tensors: dict, wire_dtype: str) -> dict[str, int]:
    from flwr.common.serde import array_record_to_proto

    from zk0.policy import to_arrays

    record = to_arrays(tensors, wire_dtype)
    return {
        "arrays": len(record),
        "payload_bytes": sum(len(a.data) for a in record.values()),
        "proto_bytes": array_record_to_proto(record).ByteSize(),
    }


def measure_tiny(backbone) -> dict[str, Any]:
    import torch

    from zk0.config import RunConfig
    from zk0.policy import build_policy, trainable_state

    cfg = RunConfig.from_run_config(common.tiny_run_config(backbone))
    policy = build_policy(cfg)
    full = {k: v.detach().to(torch.float32) for k, v in policy.state_dict().items() if v.is_floating_point()}
    skipped = [k for k, v in policy.state_dict().items() if not v.is_floating_point()]
    trainable = trainable_state(policy)
    return {
        "params_total": sum(p.numel() for p in policy.parameters()),
        "params_trainable": sum(t.numel() for t in trainable.values()),
        "state_dict_floats": sum(t.numel() for t in full.values()),
        "state_dict_non_float_entries": skipped,
        "schemes": {
            "upstream full state fp32": _record_sizes(full, "float32"),
            "zk0 trainable fp32": _record_sizes(trainable, "float32"),
            "zk0 trainable bf16": _record_sizes(trainable, "bfloat16"),
        },
    }


def compute_real() -> dict[str, Any]:
    total, trainable = common.SMOLVLA_TOTAL_PARAMS, common.SMOLVLA_TRAINABLE_PARAMS
    return {
        "params_total": total,
        "params_trainable": trainable,
        "schemes": {
            "upstream full state fp32": {"payload_bytes": total * 4},
            "zk0 trainable fp32": {"payload_bytes": trainable * 4},
            "zk0 trainable bf16": {"payload_bytes": trainable * 2},
        },
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "wire_bytes")
    p.add_argument("--rounds", type=int, default=1, help="rounds to total over (per client, both directions)")
    args = p.parse_args()

    kit = common.kit(args.kit_dir)
    tiny, real = measure_tiny(kit.backbone), compute_real()

    rows = []
    for config, data, how in (("tiny", tiny, "measured"), ("SmolVLA", real, "computed")):
        base = data["schemes"]["upstream full state fp32"]["payload_bytes"]
        for scheme, sizes in data["schemes"].items():
            payload = sizes["payload_bytes"]
            sizes["ratio_vs_upstream"] = payload / base
            sizes["per_round_both_directions"] = 2 * payload * args.rounds
            rows.append(
                (
                    config,
                    how,
                    scheme,
                    payload,
                    common.human_bytes(payload),
                    sizes.get("proto_bytes", "-"),
                    common.human_bytes(2 * payload * args.rounds),
                    f"{payload / base:.3f}x",
                    f"{base / payload:.1f}x fewer bytes" if payload != base else "-",
                )
            )
    headers = (
        "config",
        "how",
        "scheme",
        "bytes/client/direction",
        "human",
        "protobuf bytes",
        f"both ways x {args.rounds} round(s)",
        "vs upstream",
        "saving",
    )
    print(common.table(headers, rows))
    print(
        f"\ntiny: {tiny['params_total']:,} parameters, {tiny['params_trainable']:,} trainable; "
        f"SmolVLA: {real['params_total']:,} parameters, {real['params_trainable']:,} trainable "
        "(counted in docs FACTS, no download)"
    )
    common.write_json(args.json_out, "wire_bytes", args, {"tiny": tiny, "smolvla": real})


if __name__ == "__main__":
    main()
