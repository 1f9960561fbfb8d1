"""The server's round history as rows and a plot: what ``zk0bot report`` shows.

Round 0, when present, is the evaluation of the untrained model: the plot
draws it as a dashed baseline rather than as a point of the curves.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zk0 import checkpoints
from zk0.config import ACTION_MSE, EVAL_LOSS, TRAIN_LOSS
from zk0.errors import UserError
from zk0.paths import server_dir

NAN = float("nan")


class HistoryError(UserError):
    """There is no round history to report on, or it cannot be read."""


@dataclass(frozen=True)
class Row:
    """One round's aggregated numbers; NaN or None where the round has none (no training at round 0)."""

    round: int
    train_loss: float
    eval_loss: float
    action_mse: float
    accepted: int | None
    rejected: int | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """Kebab-case keys, ``None`` for missing numbers."""
        return {
            k.replace("_", "-"): None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()
        }


def _number(record: Mapping[str, Any] | None, key: str) -> float:
    value = (record or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else NAN


def rows(history: Iterable[Mapping[str, Any]]) -> list[Row]:
    """One row per round, sorted; a round written twice (a repeated round) keeps its last line."""
    by_round: dict[int, Row] = {}
    for line in history:
        if not isinstance(line, Mapping) or not isinstance(line.get("round"), int):
            raise HistoryError(f"a history line has no round number: {str(line)[:80]}")
        train, ev = line.get("train"), line.get("evaluate")
        by_round[line["round"]] = Row(
            round=line["round"],
            train_loss=_number(train, TRAIN_LOSS),
            eval_loss=_number(ev, EVAL_LOSS),
            action_mse=_number(ev, ACTION_MSE),
            accepted=line.get("accepted"),
            rejected=line.get("rejected"),
            seconds=_number(line, "seconds"),
        )
    return [by_round[r] for r in sorted(by_round)]


def load(state: Path) -> list[Row]:
    """The rows of the server history under the state dir ``state``."""
    directory = server_dir(state)
    try:
        history = checkpoints.read_history(directory)
    except json.JSONDecodeError as err:
        raise HistoryError(f"{directory / checkpoints.HISTORY_FILE} has a line that is not JSON ({err})") from None
    if not history:
        raise HistoryError(
            f"no round history in state dir {state} (no {checkpoints.HISTORY_FILE} in {directory}); "
            "run a session first, or pass the server's --state-dir"
        )
    return rows(history)


def plot(table: list[Row], out: Path) -> Path:
    """Draw losses and action MSE per round into the PNG ``out`` (written atomically)."""
    from matplotlib.figure import Figure  # heavy: only when a plot is asked for

    baseline = next((r for r in table if r.round == 0), None)
    trained = [r for r in table if r.round > 0]
    rounds = [r.round for r in trained]
    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    loss_ax, mse_ax = fig.subplots(2, 1, sharex=True)
    series = (
        (loss_ax, "train loss", "train_loss", "tab:blue"),
        (loss_ax, "eval loss", "eval_loss", "tab:orange"),
        (mse_ax, "action MSE", "action_mse", "tab:green"),
    )
    for ax, label, field, colour in series:
        points = [(r.round, getattr(r, field)) for r in trained if not math.isnan(getattr(r, field))]
        if points:  # rounds without this number are left out, so evaluations every k rounds still connect
            ax.plot(*zip(*points, strict=True), marker="o", color=colour, label=label)
        if baseline is not None and not math.isnan(getattr(baseline, field)):
            ax.axhline(getattr(baseline, field), linestyle="--", color=colour, label=f"{label}, round 0 (untrained)")
    loss_ax.set_ylabel("loss")
    mse_ax.set_ylabel("action MSE")
    mse_ax.set_xlabel("round")
    if rounds:
        mse_ax.set_xticks(rounds if len(rounds) <= 20 else rounds[:: math.ceil(len(rounds) / 20)])
    for ax in (loss_ax, mse_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(f"zk0: {len(rounds)} federated round(s)")

    out = out.expanduser()
    if out.is_dir():
        raise HistoryError(f"--out {out} is a directory; name a .png file")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
