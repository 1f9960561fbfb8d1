"""Policy build, trainable-parameter selection and the wire encoding."""

import json

import pytest
import torch

from zk0.config import RunConfig
from zk0.policy import PolicyError, build_policy, from_arrays, load_trainable, model_kind, to_arrays, trainable_state


@pytest.fixture(scope="module")
def cfg(tiny_run_config):
    return RunConfig.from_run_config(tiny_run_config)


@pytest.fixture(scope="module")
def policy(cfg):
    return build_policy(cfg)


def test_model_kinds(tmp_path, kit):
    assert model_kind("lerobot/smolvla_base") == "hub"
    assert model_kind(str(kit.backbone)) == "backbone"
    (tmp_path / "config.json").write_text(json.dumps({"type": "smolvla"}))
    assert model_kind(str(tmp_path)) == "pretrained"
    with pytest.raises(PolicyError, match="no config.json"):
        model_kind(str(tmp_path / "missing"))


def test_features_come_from_the_run_config(policy, cfg):
    assert set(policy.config.image_features) == set(cfg.camera_features)
    assert policy.config.robot_state_feature.shape == (6,)
    assert policy.config.action_feature.shape == (6,)


def test_only_expert_and_projections_train_and_the_vlm_stays_home(policy):
    names = set(trainable_state(policy))
    frozen = {n for n, p in policy.named_parameters() if not p.requires_grad}

    assert names and frozen
    assert all(".vlm." not in n for n in names), "no VLM parameter may travel"
    assert any("lm_expert" in n for n in names)
    assert {"model.state_proj.weight", "model.action_out_proj.weight"} <= names
    assert all(".vlm." in n for n in frozen)


def test_same_seed_builds_identical_frozen_weights(cfg, policy):
    again = build_policy(cfg)

    assert all(
        torch.equal(a, b) for a, b in zip(policy.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_float32_round_trip_is_exact_and_counts_raw_bytes(policy):
    state = trainable_state(policy)

    record = to_arrays(state, "float32")
    back = from_arrays(record)

    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert sum(len(a.data) for a in record.values()) == 4 * sum(t.numel() for t in state.values())


def test_bfloat16_halves_the_bytes_and_rounds_within_bf16_precision(policy):
    state = trainable_state(policy)

    record = to_arrays(state, "bfloat16")
    back = from_arrays(record)

    assert sum(len(a.data) for a in record.values()) == 2 * sum(t.numel() for t in state.values())
    for k, v in state.items():
        assert back[k].dtype == torch.float32
        assert torch.allclose(back[k], v, rtol=2**-8, atol=0)


def test_load_trainable_checks_names_and_shapes(cfg, policy):
    other = build_policy(cfg)
    state = {k: v + 1 for k, v in trainable_state(policy).items()}

    load_trainable(other, state)

    assert all(torch.equal(trainable_state(other)[k], v) for k, v in state.items())
    with pytest.raises(PolicyError, match="missing"):
        load_trainable(other, dict(list(state.items())[1:]))
    name = next(iter(state))
    with pytest.raises(PolicyError, match=f"parameter {name}: shape"):
        load_trainable(other, state | {name: torch.zeros(3)})


def test_from_arrays_rejects_truncated_data(policy):
    record = to_arrays(trainable_state(policy), "float32")
    name = next(iter(record))
    record[name].data = record[name].data[:-4]

    with pytest.raises(PolicyError, match=f"array {name}"):
        from_arrays(record)
