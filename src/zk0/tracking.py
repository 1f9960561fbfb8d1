"""Optional Weights & Biases logging of each round's history record, on the server only.

Off by default (``use-wandb``). wandb reads ``WANDB_API_KEY`` from the
environment itself; zk0 never passes, logs or saves it. ``WANDB_MODE=offline``
keeps the run on disk only, under the ``directory`` given to
:meth:`Tracker.start`. Tracking never stops training: a wandb failure after
start is logged as a warning and tracking goes quiet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zk0.errors import ConfigError, one_line

log = logging.getLogger(__name__)

API_KEY = "WANDB_API_KEY"
MODE = "WANDB_MODE"
# Modes in which wandb needs no API key.
KEYLESS_MODES = ("offline", "disabled")


def check_ready(enabled: bool, env: Mapping[str, str] = os.environ) -> None:
    """Raise ConfigError now, before anything starts, if tracking is on but cannot run."""
    if not enabled:
        return
    try:
        import wandb  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"use-wandb=true needs the wandb package ({err}); install it: pip install wandb") from err
    if not env.get(API_KEY) and env.get(MODE, "").strip().lower() not in KEYLESS_MODES:
        raise ConfigError(
            f"use-wandb=true needs {API_KEY} in the server's environment "
            f"(or {MODE}=offline to keep the run on disk); set it, or turn use-wandb off"
        )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten(record: Mapping[str, Any]) -> dict[str, float]:
    """wandb scalars from one history record (``round`` is the step, not a scalar).

    ``train/<metric>``, ``evaluate/<metric>``, ``updates/accepted|rejected``,
    ``round/seconds``, and per node ``client/<node-id>/train|evaluate/<metric>``;
    values that are not numbers (digests, lists, None) are left out.
    """
    out: dict[str, float] = {}
    for key in ("accepted", "rejected"):
        if _number(record.get(key)):
            out[f"updates/{key}"] = record[key]
    if _number(record.get("seconds")):
        out["round/seconds"] = record["seconds"]
    for section in ("train", "evaluate"):
        out.update({f"{section}/{k}": v for k, v in (record.get(section) or {}).items() if _number(v)})
    for section, key in (("train", "clients"), ("evaluate", "eval-clients")):
        for client in record.get(key) or ():
            node = client.get("node-id")
            out.update({f"client/{node}/{section}/{k}": v for k, v in client.items() if k != "node-id" and _number(v)})
    return out


class Tracker:
    """One wandb run per server session; with tracking off every method does nothing."""

    def __init__(self, run: Any = None) -> None:
        self._run = run

    @classmethod
    def start(
        cls, enabled: bool, *, project: str, run_name: str, config: Mapping[str, Any], directory: Path
    ) -> Tracker:
        """A tracker logging to a new wandb run whose files go under ``directory``; a no-op one when off."""
        if not enabled:
            return cls()
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        try:
            settings = wandb.Settings(
                silent=True,
                console="off",  # zk0's own log has the round lines; keep wandb out of stdout
                disable_git=True,
                disable_code=True,
                save_code=False,
                x_disable_meta=True,  # no host facts or process arguments
                x_disable_stats=True,  # no system metrics: the server does not train
                x_save_requirements=False,
            )
            run = wandb.init(
                project=project,
                name=run_name,
                config=dict(config),
                dir=directory,
                settings=settings,
                reinit="create_new",
            )
        except Exception as err:  # wandb's own errors (network, auth, settings); training goes on
            log.warning("wandb: could not start a run, tracking is off for this session: %s", one_line(err))
            return cls()
        return cls(run)

    @property
    def enabled(self) -> bool:
        return self._run is not None

    def log_round(self, record: Mapping[str, Any]) -> None:
        """Log one history record's scalars at step ``record['round']``."""
        if self._run is None:
            return
        try:
            self._run.log(flatten(record), step=int(record["round"]))
        except Exception as err:
            log.warning(
                "wandb: logging round %s failed, tracking is off from here: %s", record.get("round"), one_line(err)
            )
            self._stop(exit_code=1)

    def finish(self) -> None:
        """Close the run (uploads what is left online); safe to call twice."""
        self._stop(exit_code=0)

    def _stop(self, exit_code: int) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:
            log.warning("wandb: closing the run failed: %s", one_line(err))
