"""The SmolVLA policy: build it, pick what trains, and move those parameters over the wire.

Only trainable parameters (the action expert and projections with SmolVLA's
defaults; the frozen VLM never travels) cross the wire, as an ``ArrayRecord``
keyed by parameter name holding raw little-endian bytes in the wire dtype.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from flwr.app import Array, ArrayRecord

from zk0.config import RunConfig, WireDtype
from zk0.errors import PolicyError

if TYPE_CHECKING:
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

log = logging.getLogger(__name__)

# Serialisation type of zk0's arrays: raw little-endian bytes, dtype and shape in the Array.
STYPE = "zk0.raw-le"
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# SmolVLA uses at most this many VLM layers (its own default).
_MAX_VLM_LAYERS = 16


def model_kind(model: str) -> str:
    """'pretrained' (a SmolVLA dir), 'backbone' (a SmolVLM dir), or 'hub' (a hub id)."""
    path = Path(model).expanduser()
    if path.is_absolute() or model.startswith("."):
        config_file = path / "config.json"
        if not config_file.is_file():
            raise PolicyError(f"model directory {path} has no config.json")
        config = json.loads(config_file.read_text())
        if config.get("type") == "smolvla":
            return "pretrained"
        if "text_config" in config and "vision_config" in config:
            return "backbone"
        raise PolicyError(f"model directory {path} holds neither a SmolVLA policy nor a SmolVLM backbone")
    return "hub"


def _features(cfg: RunConfig) -> tuple[dict, dict]:
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {
        key: PolicyFeature(FeatureType.VISUAL, (3, cfg.image_size, cfg.image_size)) for key in cfg.camera_features
    }
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (cfg.state_dim,))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (cfg.action_dim,))}
    return inputs, outputs


def build_policy(cfg: RunConfig, device: str = "cpu") -> SmolVLAPolicy:
    """Build SmolVLA from ``cfg.model`` with the run config's features.

    A backbone directory gives a fresh policy initialised from ``cfg.seed``, so
    every node builds identical frozen weights; its VLM weights are loaded when
    the directory has them.
    """
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    inputs, outputs = _features(cfg)
    shared = dict(
        input_features=inputs,
        output_features=outputs,
        chunk_size=cfg.chunk_size,
        n_action_steps=cfg.n_action_steps,
        resize_imgs_with_padding=(cfg.image_size, cfg.image_size),
        optimizer_lr=cfg.learning_rate,
        device=device,
    )
    kind = model_kind(cfg.model)
    if kind == "backbone":
        backbone = Path(cfg.model).expanduser().resolve()
        text_config = json.loads((backbone / "config.json").read_text())["text_config"]
        config = SmolVLAConfig(
            vlm_model_name=str(backbone),
            load_vlm_weights=any(backbone.glob("*.safetensors")),
            num_vlm_layers=min(_MAX_VLM_LAYERS, text_config["num_hidden_layers"]),
            **shared,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            policy = SmolVLAPolicy(config)
    else:
        from lerobot.configs.policies import PreTrainedConfig

        config = PreTrainedConfig.from_pretrained(cfg.model)
        for name, value in shared.items():
            setattr(config, name, value)
        policy = SmolVLAPolicy.from_pretrained(cfg.model, config=config)
    log.info("built SmolVLA from %s %s: %s", kind, cfg.model, describe(policy))
    return policy.to(device)


def describe(policy: torch.nn.Module) -> str:
    total = sum(p.numel() for p in policy.parameters())
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return f"{total:,} parameters, {trainable:,} trainable"


def trainable_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (and travel), by name, detached."""
    return {name: p.detach() for name, p in policy.named_parameters() if p.requires_grad}


def load_trainable(policy: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy received trainable parameters into ``policy``; names and shapes must match exactly."""
    params = dict(policy.named_parameters())
    expected = {name for name, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise PolicyError(f"received parameters do not match the policy: missing {missing[:3]}, extra {extra[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise PolicyError(f"parameter {name}: shape {tuple(value.shape)}, expected {tuple(params[name].shape)}")
            params[name].copy_(value)


def to_arrays(tensors: Mapping[str, torch.Tensor], wire_dtype: WireDtype) -> ArrayRecord:
    """Encode tensors for the wire in ``wire_dtype`` (raw bytes, no pickling)."""
    dtype = _DTYPES[wire_dtype]
    record = ArrayRecord()
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu", dtype).contiguous()
        record[name] = Array(
            dtype=wire_dtype, shape=tuple(t.shape), stype=STYPE, data=t.reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return record


def decode_array(name: str, array: Array) -> torch.Tensor:
    """One array made by :func:`to_arrays`, as a float32 tensor; raises PolicyError on a malformed one."""
    if array.stype != STYPE or array.dtype not in _DTYPES:
        raise PolicyError(f"array {name}: unsupported encoding {array.stype}/{array.dtype}")
    dtype = _DTYPES[array.dtype]
    expected = dtype.itemsize * math.prod(array.shape)
    if len(array.data) != expected:
        raise PolicyError(f"array {name}: {len(array.data)} bytes for shape {tuple(array.shape)} {array.dtype}")
    flat = torch.frombuffer(bytearray(array.data), dtype=dtype) if expected else torch.empty(0, dtype=dtype)
    return flat.reshape(tuple(array.shape)).to(torch.float32)


def from_arrays(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Decode an ArrayRecord made by :func:`to_arrays` into float32 tensors."""
    return {name: decode_array(name, array) for name, array in record.items()}
