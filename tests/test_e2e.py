"""A real federated run on loopback: flower-superlink, two flower-supernodes, `flwr run`."""

import time

import psutil
import pytest
import torch

from conftest import ROOT, TINY
from federation import LocalFederation
from zk0 import checkpoints
from zk0.config import RunConfig
from zk0.datasets import DatasetSource
from zk0.packing import pack
from zk0.policy import build_policy, to_arrays, trainable_state
from zk0.strategy import names_digest

pytestmark = pytest.mark.slow

ROUNDS = 2


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tree(pids: list[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found |= {pid, *(c.pid for c in proc.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
    return found


def test_two_nodes_with_different_cameras_train_two_rounds(kit, tiny_run_config, tmp_path):
    cams = [DatasetSource.parse(f"local:{d}").metadata().camera_keys for d in kit.datasets]
    assert cams[0] != cams[1], "the two nodes must name their cameras differently"
    nodes = [{"dataset-uri": f"local:{d}", "num-workers": 0} for d in kit.datasets]
    overrides = {**TINY, "model": str(kit.backbone), "num-server-rounds": ROUNDS}

    started = time.monotonic()
    with LocalFederation(tmp_path / "fed", nodes) as fed:
        fed.run(ROOT, overrides, timeout=900)
        spawned = _tree(fed.pids)
        server = fed.server_dir
    wall = time.monotonic() - started
    print(f"e2e wall time: {wall:.1f} s for {ROUNDS} rounds")

    # Every process the federation started (SuperLink, SuperNodes, SuperExecs) is gone.
    assert spawned and not [p for p in spawned if _running(p)]

    baseline, *history = checkpoints.read_history(server)
    assert [line["round"] for line in history] == list(range(1, ROUNDS + 1))
    # Round 0: the untrained model, evaluated on both nodes' held-out episodes, nothing trained.
    assert baseline["round"] == 0 and "train" not in baseline and len(baseline["eval-clients"]) == 2

    initial = trainable_state(build_policy(RunConfig.from_run_config(tiny_run_config)))
    # The float32 trainable parameters, packed: their bytes plus one header naming them (zk0.packing).
    expected_bytes = sum(len(a.data) for a in pack(to_arrays(initial, "float32").items()).values())
    assert 0 < expected_bytes - 4 * sum(t.numel() for t in initial.values()) < 10_000
    for line in history:
        assert line["accepted"] == 2 and line["rejected"] == 0
        assert len({c["node-id"] for c in line["clients"]}) == 2
        assert len(line["eval-clients"]) == 2
        for client in line["clients"]:
            # Privacy: exactly the trainable parameters left the node, nothing more.
            assert client["param-names-sha256"] == names_digest(initial)
            assert client["num-arrays"] == len(initial)
            assert client["payload-bytes"] == expected_bytes
            assert client["num-examples"] == TINY["local-steps"] * TINY["batch-size"]
            assert client["train-loss"] > 0
        for client in line["eval-clients"]:
            assert client["eval-loss"] > 0 and client["action-mse"] > 0 and client["num-examples"] > 0

    final, meta = checkpoints.load_global(server)
    assert meta["round"] == str(ROUNDS)
    assert set(final) == set(initial)
    assert any(not torch.equal(final[k], initial[k]) for k in initial), "the global model did not change"
