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
