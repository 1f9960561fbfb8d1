"""Shared test setup: no test may reach the Hugging Face hub; one offline kit per session."""

import os
import tomllib
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]

# The tiny model: run settings on top of pyproject's defaults (model is added by the fixture).
TINY = {"image-size": 64, "chunk-size": 10, "n-action-steps": 10, "local-steps": 3, "batch-size": 4}


@pytest.fixture(scope="session")
def kit(tmp_path_factory):
    """Tiny backbone + two synthetic SO-100 datasets with different cameras, built once."""
    from zk0.offline import build_kit

    return build_kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture(scope="session")
def tiny_run_config(kit) -> dict:
    """The full run config of a tiny federated run: declared defaults + tiny overrides."""
    defaults = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return {**defaults, **TINY, "model": str(kit.backbone)}


@pytest.fixture
def task_identity():
    """Messages need the identity Flower sets in its app processes."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture
def zk0_log(caplog):
    """caplog for zk0's records even after the apps route them to Flower's handlers (no propagation)."""
    import logging

    loggers = [logging.getLogger("zk0"), logging.getLogger("flwr")]
    saved = [(lg.propagate, list(lg.handlers)) for lg in loggers]
    loggers[0].addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    for lg, (propagate, handlers) in zip(loggers, saved, strict=True):
        lg.propagate, lg.handlers[:] = propagate, handlers
