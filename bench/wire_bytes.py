"""Wire bytes per client per round: upstream's full fp32 state vs zk0's trainable-only payloads.

Each round the server sends the global model down to a client and the client sends its update up:

- upstream: upstream zk0 sends SmolVLA's whole state_dict in float32 both ways;
- zk0 fp32: zk0 sends only the trainable parameters (train_expert_only), float32 both ways;
- zk0 bf16: the same with ``wire-dtype=bfloat16``;
- zk0 fp32/bf16 + int8 up: the global model down in the wire dtype, the update up as int8 deltas
  with one float32 scale per tensor (``update-compression=int8``, ``zk0.compression``).

Tiny config (the test suite's tiny SmolVLA from the offline kit): MEASURED from real records as they
travel (zk0's packed into few arrays, ``zk0.packing``; upstream's one array per tensor): the payload
(sum of ``Array.data`` lengths, packing headers included), the protobuf the record serialises to
(``flwr.common.serde.array_record_to_proto(...).ByteSize()``; Flower then moves arrays in 5 MiB
chunks, so the bytes on the socket add a little framing per chunk), and the Flower objects the
record is sent as (the record, each Array, each chunk: one HTTP request each), packed and unpacked.
The int8 update is encoded from a trained-like update (the global model plus small noise): its
size does not depend on the values.

Real SmolVLA (lerobot/smolvla_base): COMPUTED from parameter counts (450,046,176 total, 99,880,992
trainable); no download. Non-parameter buffers, if any, are not counted, nor the int8 scales
(4 bytes per tensor: kilobytes).

    uv run python bench/wire_bytes.py
"""

from __future__ import annotations

from typing import Any

import common


def _objects(obj) -> int:
    """Flower objects ``obj`` is sent as: itself and its children (an ArrayRecord's Arrays, an Array's chunks)."""
    return 1 + sum(_objects(child) for child in (obj.children or {}).values())


def _record_sizes(record, packed: bool) -> dict[str, int]:
    """Sizes of ``record`` (one array per tensor) as it travels: packed (zk0) or as it is (upstream)."""
    from flwr.common.serde import array_record_to_proto

    from zk0.packing import pack

    sent = pack(record.items()) if packed else record
    return {
        "arrays": len(record),
        "parameter_bytes": sum(len(a.data) for a in record.values()),
        "payload_bytes": sum(len(a.data) for a in sent.values()),
        "proto_bytes": array_record_to_proto(sent).ByteSize(),
        "objects": _objects(sent),
        "objects_unpacked": _objects(record),
    }


def measure_tiny(backbone) -> dict[str, Any]:
    import torch

    from zk0.compression import encode_update
    from zk0.config import RunConfig
    from zk0.policy import build_policy, from_arrays, to_arrays, trainable_state

    cfg = RunConfig.from_run_config(common.tiny_run_config(backbone))
    policy = build_policy(cfg)
    full = {k: v.detach().to(torch.float32) for k, v in policy.state_dict().items() if v.is_floating_point()}
    skipped = [k for k, v in policy.state_dict().items() if not v.is_floating_point()]
    trainable = trainable_state(policy)
    gen = torch.Generator().manual_seed(0)
    schemes = {"upstream full state fp32": (to_arrays(full, "float32"),) * 2}
    for wire in ("float32", "bfloat16"):
        down = to_arrays(trainable, wire)
        received = from_arrays(down)
        trained = {k: v + 1e-3 * torch.randn(v.shape, generator=gen) for k, v in received.items()}
        short = {"float32": "fp32", "bfloat16": "bf16"}[wire]
        schemes[f"zk0 trainable {short}"] = (down, encode_update(trained, received, "none", wire))
        schemes[f"zk0 trainable {short} + int8 up"] = (down, encode_update(trained, received, "int8", wire))
    return {
        "params_total": sum(p.numel() for p in policy.parameters()),
        "params_trainable": sum(t.numel() for t in trainable.values()),
        "state_dict_floats": sum(t.numel() for t in full.values()),
        "state_dict_non_float_entries": skipped,
        "schemes": {
            name: {"down": _record_sizes(d, packed), "up": _record_sizes(u, packed)}
            for name, (d, u) in schemes.items()
            for packed in [name.startswith("zk0")]
        },
    }


def compute_real() -> dict[str, Any]:
    total, trainable = common.SMOLVLA_TOTAL_PARAMS, common.SMOLVLA_TRAINABLE_PARAMS

    def sizes(down: int, up: int) -> dict[str, dict[str, int]]:
        return {"down": {"payload_bytes": down}, "up": {"payload_bytes": up}}

    return {
        "params_total": total,
        "params_trainable": trainable,
        "schemes": {
            "upstream full state fp32": sizes(total * 4, total * 4),
            "zk0 trainable fp32": sizes(trainable * 4, trainable * 4),
            "zk0 trainable bf16": sizes(trainable * 2, trainable * 2),
            "zk0 trainable fp32 + int8 up": sizes(trainable * 4, trainable),
            "zk0 trainable bf16 + int8 up": sizes(trainable * 2, trainable),
        },
    }


def _objects_cell(up: dict[str, int]) -> str:
    if "objects" not in up:
        return "-"
    if up["objects"] == up["objects_unpacked"]:
        return str(up["objects"])
    return f"{up['objects']} ({up['objects_unpacked']})"


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "wire_bytes")
    p.add_argument("--rounds", type=int, default=1, help="rounds to total over (per client, both directions)")
    args = p.parse_args()

    kit = common.kit(args.kit_dir)
    tiny, real = measure_tiny(kit.backbone), compute_real()

    rows = []
    for config, data, how in (("tiny", tiny, "measured"), ("SmolVLA", real, "computed")):
        upstream = data["schemes"]["upstream full state fp32"]
        base = upstream["down"]["payload_bytes"] + upstream["up"]["payload_bytes"]
        for scheme, sizes in data["schemes"].items():
            down, up = sizes["down"]["payload_bytes"], sizes["up"]["payload_bytes"]
            sizes["ratio_vs_upstream"] = (down + up) / base
            sizes["up_ratio_vs_upstream"] = up / upstream["up"]["payload_bytes"]
            rows.append(
                (
                    config,
                    how,
                    scheme,
                    common.human_bytes(down),
                    common.human_bytes(up),
                    up,
                    sizes["up"].get("proto_bytes", "-"),
                    _objects_cell(sizes["up"]),
                    common.human_bytes((down + up) * args.rounds),
                    f"{(down + up) / base:.3f}x",
                    f"{sizes['up_ratio_vs_upstream']:.3f}x",
                )
            )
    headers = (
        "config",
        "how",
        "scheme",
        "down (global model)",
        "up (update)",
        "up bytes",
        "up protobuf bytes",
        "Flower objects up (unpacked)",
        f"both ways x {args.rounds} round(s)",
        "both ways vs upstream",
        "up vs upstream",
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
