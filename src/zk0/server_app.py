"""Flower ServerApp: run config → settings → initial trainable parameters → strategy.start."""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from zk0 import checkpoints
from zk0.config import RunConfig
from zk0.integrity import digest
from zk0.logs import use_flower_handlers
from zk0.paths import server_dir
from zk0.policy import build_policy, describe, to_arrays, trainable_state
from zk0.strategy import Zk0Strategy

log = logging.getLogger(__name__)
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train the global SmolVLA for ``num-server-rounds`` rounds over the connected nodes."""
    use_flower_handlers()
    cfg = RunConfig.from_run_config(context.run_config)
    policy = build_policy(cfg)
    log.info("global model %s (%s); only trainable parameters travel", cfg.model, describe(policy))
    out_dir = server_dir()
    state, done, target = checkpoints.resume(out_dir, trainable_state(policy), cfg.num_server_rounds)
    initial = to_arrays(state, "float32")
    if done:
        log.info(
            "resuming from the round-%d checkpoint in %s (digest %s); this session trains up to round %d",
            done,
            out_dir,
            digest(initial),
            target,
        )
    del policy
    strategy = Zk0Strategy(cfg, out_dir, run_id=context.run_id, rounds_done=done, target=target)
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=target - done,
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
    )
