"""Client training throughput: zk0's local loop vs LeRobot's own training update, same process, same data.

Both loops get a policy built the way zk0's ClientApp builds it (``zk0.client_app._setup``: the
node's dataset, camera map, SmolVLA from the run config with the received global weights, LeRobot's
preprocessor with the node's stats) and a DataLoader opened the way the ClientApp opens it
(``zk0.node.open_loader``; same seed, so both see identical batches in the same order):

- zk0: ``zk0.task.train(policy, loader, prepare, steps=...)`` as ``zk0.client_app.fit`` calls it;
- LeRobot: the body of ``lerobot-train``'s loop (``lerobot/scripts/lerobot_train.py``):
  optimizer and cosine scheduler from the policy's presets over ``policy.get_optim_params()``
  (``make_optimizer_and_scheduler``), ``accelerate.Accelerator`` on CPU (SmolVLA has no ``dtype``
  setting, so no mixed precision), then per step ``next(dl_iter)``, uint8-camera conversion, the
  preprocessor, and ``update_policy(...)`` with a ``MetricsTracker``.

Each of the two runs ``--steps`` optimizer steps per repeat, timed from optimizer construction to
the last step (both loops build their optimizer per call; the Accelerator and the models are
built once, outside the timing). The order alternates between repeats; one untimed warm-up of
each comes first. Samples/s = steps x batch size / seconds. Both loops apply the same
``prepare`` (zk0's camera renaming + LeRobot's preprocessor), so the ratio isolates the loop.

    uv run python bench/client_throughput.py
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import common


def _node(kit, run_config: dict, num_workers: int):
    """What zk0.client_app.fit has before it trains: policy, prepare, settings, episodes."""
    from flwr.app import ConfigRecord, Context, RecordDict

    from zk0 import client_app
    from zk0 import config as keys
    from zk0.config import RunConfig
    from zk0.integrity import digest
    from zk0.policy import build_policy, to_arrays, trainable_state

    cfg = RunConfig.from_run_config(run_config)
    arrays = to_arrays(trainable_state(build_policy(cfg)), cfg.wire_dtype)
    round_config = ConfigRecord({keys.ARRAYS_DIGEST: digest(arrays)})
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"dataset-uri": f"local:{kit.datasets[0]}", "num-workers": num_workers, "device": "cpu"},
        state=RecordDict(),
        run_config=run_config,
    )
    node, _ = client_app._setup(arrays, round_config, context, split="train")  # the ClientApp's own setup
    return node


def _loader(node, seed: int):
    """The training DataLoader as zk0.client_app.fit opens it."""
    from zk0.node import open_loader

    return open_loader(node, shuffle=True, seed=seed)


def run_zk0(node, steps: int, seed: int) -> dict[str, Any]:
    from zk0.task import train

    loader = _loader(node, seed)
    start = time.perf_counter()
    result = train(node.policy, loader, node.prepare, steps=steps, device=node.device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": result.num_examples, "loss": result.loss}


class LeRobotLoop:
    """lerobot-train's per-step code path, on a policy and loader built like zk0's."""

    def __init__(self, node) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.node = node
        # As lerobot_train.train() builds it on a CPU config without a policy dtype.
        self.accelerator = Accelerator(
            step_scheduler_with_optimizer=False,
            mixed_precision=None,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            cpu=True,
        )
        self.policy = self.accelerator.prepare(node.policy)

    def __call__(self, steps: int, seed: int) -> dict[str, Any]:
        from lerobot.scripts.lerobot_train import update_policy
        from lerobot.utils.logging_utils import AverageMeter, MetricsTracker

        node, accelerator, policy = self.node, self.accelerator, self.policy
        loader = _loader(node, seed)
        start = time.perf_counter()
        config = node.policy.config
        optimizer = config.get_optimizer_preset().build(node.policy.get_optim_params())
        scheduler = config.get_scheduler_preset().build(optimizer, steps)
        optimizer, loader, scheduler = accelerator.prepare(optimizer, loader, scheduler)
        metrics = {
            "loss": AverageMeter("loss", ":.3f"),
            "grad_norm": AverageMeter("grdn", ":.3f"),
            "lr": AverageMeter("lr", ":0.1e"),
            "update_s": AverageMeter("updt_s", ":.3f"),
            "dataloading_s": AverageMeter("data_s", ":.3f"),
        }
        dataset = loader.dataset
        tracker = MetricsTracker(
            node.cfg.batch_size, dataset.num_frames, dataset.num_episodes, metrics, accelerator=accelerator
        )
        camera_keys = dataset.meta.camera_keys
        dl_iter = _cycle(loader)
        policy.train()
        losses, samples = [], 0
        for _ in range(steps):
            batch = next(dl_iter)
            for key in camera_keys:
                if key in batch and batch[key].dtype.is_floating_point is False:
                    batch[key] = batch[key].float() / 255.0
            samples += len(batch["action"])
            batch = node.prepare(batch)
            tracker, _ = update_policy(
                tracker, policy, batch, optimizer, config.optimizer_grad_clip_norm, accelerator, lr_scheduler=scheduler
            )
            tracker.step()
            losses.append(tracker.loss.val)
        seconds = time.perf_counter() - start
        accelerator.free_memory(optimizer, scheduler, loader)
        return {"seconds": seconds, "samples": samples, "loss": sum(losses) / len(losses)}


def _cycle(loader):
    while True:
        yield from loader


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "client_throughput")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per loop per repeat")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats of each loop (order alternates)")
    p.add_argument("--batch-size", type=int, default=common.TINY["batch-size"], help="batch size (tiny config: 4)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (the client's default is 2)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared 2-core machine; 0: torch default)"
    )
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    kit = common.kit(args.kit_dir)
    run_config = common.tiny_run_config(kit.backbone, **{"batch-size": args.batch_size, "local-steps": args.steps})
    zk0_node = _node(kit, run_config, args.num_workers)
    lerobot = LeRobotLoop(_node(kit, run_config, args.num_workers))

    loops = {"zk0": lambda seed: run_zk0(zk0_node, args.steps, seed), "lerobot": lambda seed: lerobot(args.steps, seed)}
    for loop in loops.values():  # warm-up: first-call allocations, lazy imports, page cache
        loop(seed=12345)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
    for r in range(args.repeats):
        order = ("zk0", "lerobot") if r % 2 == 0 else ("lerobot", "zk0")
        for name in order:
            result = loops[name](seed=r)
            result["samples_per_s"] = result["samples"] / result["seconds"]
            result["position"] = order.index(name)
            runs[name].append(result)
            print(f"repeat {r} {name:7s} {result['samples_per_s']:7.1f} samples/s  ({result['seconds']:.2f} s)")

    ratios = [z["samples_per_s"] / le["samples_per_s"] for z, le in zip(runs["zk0"], runs["lerobot"], strict=True)]
    rows = []
    summary: dict[str, Any] = {}
    for name, results in runs.items():
        rates = [x["samples_per_s"] for x in results]
        summary[name] = {
            "median_samples_per_s": statistics.median(rates),
            "min_samples_per_s": min(rates),
            "max_samples_per_s": max(rates),
            "median_seconds_per_step": statistics.median(x["seconds"] for x in results) / args.steps,
            "runs": results,
        }
        rows.append(
            (
                name,
                args.steps,
                args.batch_size,
                statistics.median(rates),
                f"{min(rates):.1f}-{max(rates):.1f}",
                1000 * summary[name]["median_seconds_per_step"],
            )
        )
    summary["ratio_zk0_over_lerobot"] = {"median": statistics.median(ratios), "per_repeat": ratios}
    print()
    print(common.table(("loop", "steps", "batch", "median samples/s", "range", "ms/step"), rows))
    print(
        f"\nzk0 / LeRobot samples/s: median {statistics.median(ratios):.3f}x "
        f"(per repeat {', '.join(f'{x:.3f}' for x in ratios)}); target >= 0.95x"
    )
    common.write_json(args.json_out, "client_throughput", args, summary)


if __name__ == "__main__":
    main()
