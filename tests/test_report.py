"""zk0bot report: the table's numbers, a real PNG, and the no-history error."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from zk0 import checkpoints, report
from zk0.cli import main
from zk0.paths import server_dir

# Round 0 evaluates the untrained model (no training); round 2's evaluation failed.
# Round 1's train-loss is the sample-weighted mean of its clients: (8 * 1.0 + 16 * 1.375) / 24 = 1.25.
HISTORY = [
    {
        "round": 0,
        "run-id": 7,
        "seconds": 3.0,
        "evaluate": {"eval-loss": 2.0, "action-mse": 1.5, "num-examples": 10},
        "eval-clients": [{"node-id": 1, "eval-loss": 2.0, "action-mse": 1.5, "num-examples": 10}],
    },
    {
        "round": 1,
        "run-id": 7,
        "seconds": 12.5,
        "accepted": 2,
        "rejected": 0,
        "clients": [
            {"node-id": 1, "num-examples": 8, "train-loss": 1.0, "payload-bytes": 400},
            {"node-id": 2, "num-examples": 16, "train-loss": 1.375, "payload-bytes": 400},
        ],
        "train": {"train-loss": 1.25, "num-examples": 24},
        "evaluate": {"eval-loss": 1.5, "action-mse": 1.0, "num-examples": 10},
        "eval-clients": [],
    },
    {
        "round": 2,
        "run-id": 7,
        "seconds": 11.0,
        "accepted": 1,
        "rejected": 1,
        "clients": [{"node-id": 1, "num-examples": 8, "train-loss": 0.75, "payload-bytes": 400}],
        "train": {"train-loss": 0.75, "num-examples": 8},
        "evaluate": None,
        "eval-clients": [],
    },
]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture
def state(tmp_path):
    for line in HISTORY:
        checkpoints.append_history(server_dir(tmp_path), line)
    return tmp_path


def _row(out: str, first: str) -> list[str]:
    """The cells of the table row starting with ``first``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃|").split("│")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{out}")


def test_report_prints_each_round_and_writes_a_real_png(state, tmp_path, capsys):
    png = tmp_path / "plots" / "report.png"

    code, out, err = run_cli(["report", "--state-dir", str(state), "--out", str(png)], capsys)

    assert code in (0, None), err
    assert _row(out, "0") == ["0", "-", "2.0000", "1.5000", "-", "3.0"]
    assert _row(out, "1") == ["1", "1.2500", "1.5000", "1.0000", "2/0", "12.5"]
    assert _row(out, "2") == ["2", "0.7500", "-", "-", "1/1", "11.0"]
    assert err.strip() == f"plot: {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(png)
    assert pixels.shape[0] >= 400 and pixels.shape[1] >= 400
    assert np.var(pixels[..., :3]) > 0
    assert [p.name for p in png.parent.iterdir()] == ["report.png"], "no temp file left behind"


def test_report_json_has_none_for_missing_numbers_and_defaults_to_the_state_dir(state, capsys):
    code, out, err = run_cli(["report", "--state-dir", str(state), "--json"], capsys)

    assert code in (0, None), err
    data = json.loads(out)
    assert [r["round"] for r in data] == [0, 1, 2]
    assert data[0] == {
        "round": 0,
        "train-loss": None,
        "eval-loss": 2.0,
        "action-mse": 1.5,
        "accepted": None,
        "rejected": None,
        "seconds": 3.0,
    }
    assert data[2]["eval-loss"] is None and data[2]["train-loss"] == 0.75
    assert (server_dir(state) / "report.png").stat().st_size > 0


def test_a_repeated_round_keeps_its_last_line():
    rows = report.rows([{"round": 1, "train": {"train-loss": 3.0}}, {"round": 1, "train": {"train-loss": 2.0}}])

    assert [(r.round, r.train_loss) for r in rows] == [(1, 2.0)]


def test_a_history_without_baseline_or_evaluation_still_plots(tmp_path):
    rows = report.rows([{"round": 1, "train": {"train-loss": 1.0}}])

    png = report.plot(rows, tmp_path / "r.png")

    assert imread(png).shape[0] >= 400


def test_no_history_is_one_line_naming_the_state_dir(tmp_path, capsys):
    code, out, err = run_cli(["report", "--state-dir", str(tmp_path)], capsys)

    assert code == 2 and out == ""
    assert err.startswith("Error: no round history in state dir") and str(tmp_path) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (server_dir(tmp_path) / "report.png").exists()
