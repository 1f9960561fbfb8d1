"""Local training and evaluation of SmolVLA on a node's own data (pure torch/LeRobot, no Flower)."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from zk0 import config as keys

log = logging.getLogger(__name__)

Batch = dict[str, Any]
# Renames a raw dataset batch onto the model's features, then LeRobot's preprocessor.
Prepare = Callable[[Batch], Batch]


@dataclass(frozen=True)
class TrainResult:
    loss: float  # mean flow-matching loss over the steps (without the proximal term)
    num_examples: int  # samples seen, counted per sample, not per batch
    steps: int
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean flow-matching loss per sample
    action_mse: float  # MSE of the predicted chunk vs the recorded one, normalised units, padding masked
    num_examples: int
    seconds: float


def resolve_device(setting: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; the choice is logged."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    elif setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; use device='auto' or 'cpu'")
    device = torch.device(setting)
    log.info("training on %s%s", device, " with bfloat16 autocast" if device.type == "cuda" else "")
    return device


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _cycle(loader: Iterable[Batch]) -> Iterator[Batch]:
    while True:
        yield from loader


def _batch_size(batch: Batch) -> int:
    return len(batch["action"])


def progress(step: int, steps: int, loss: float, seconds: float, width: int = 20) -> str:
    """A progress bar for the client's log: ``[#####---------------] step 50/200 loss 0.5312 2.1 steps/s``."""
    done = width * step // steps
    rate = step / max(seconds, 1e-9)
    return f"[{'#' * done}{'-' * (width - done)}] step {step}/{steps} loss {loss:.4f} {rate:.1f} steps/s"


def train(
    policy: torch.nn.Module,
    loader: Iterable[Batch],
    prepare: Prepare,
    *,
    steps: int,
    device: torch.device,
    proximal_mu: float = 0.0,
) -> TrainResult:
    """Run ``steps`` optimizer steps with SmolVLA's optimizer preset.

    With ``proximal_mu > 0`` the FedProx term (mu/2)·||w - w_global||² over the
    trainable parameters is added to the loss.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = policy.config.get_optimizer_preset().build(params)
    clip = policy.config.optimizer_grad_clip_norm
    anchors = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    policy.train()
    total_loss, seen = 0.0, 0
    start = time.perf_counter()
    for step, raw in enumerate(itertools.islice(_cycle(loader), steps), start=1):
        batch = prepare(raw)
        with _autocast(device):
            loss, _ = policy.forward(batch)
        objective = loss
        if anchors:
            objective = loss + proximal_mu / 2 * sum((p - a).pow(2).sum() for p, a in zip(params, anchors, strict=True))
        objective.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        n = _batch_size(raw)
        total_loss += loss.item() * n
        seen += n
        if step == 1 or step % max(1, steps // 10) == 0 or step == steps:
            log.info("%s", progress(step, steps, loss.item(), time.perf_counter() - start))
    seconds = time.perf_counter() - start
    return TrainResult(loss=total_loss / max(seen, 1), num_examples=seen, steps=steps, seconds=seconds)


@torch.no_grad()
def evaluate(
    policy: torch.nn.Module,
    loader: Iterable[Batch],
    prepare: Prepare,
    *,
    device: torch.device,
    max_batches: int = 0,
    seed: int = 0,
) -> EvalResult:
    """Held-out flow-matching loss and action-chunk MSE, seeded so equal weights give equal numbers."""
    policy.eval()
    start = time.perf_counter()
    loss_sum, sq_sum, valid, seen = 0.0, 0.0, 0, 0
    batches = itertools.islice(loader, max_batches) if max_batches else loader
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for raw in batches:
            batch = prepare(raw)
            with _autocast(device):
                loss, _ = policy.forward(dict(batch))
                policy.reset()
                predicted = policy.predict_action_chunk(dict(batch)).float()
            target = batch["action"].float()
            mask = (
                ~batch["action_is_pad"] if "action_is_pad" in batch else torch.ones(target.shape[:2], dtype=torch.bool)
            )
            mask = mask.to(target.device)
            steps = min(predicted.shape[1], target.shape[1])
            err = (predicted[:, :steps] - target[:, :steps]).pow(2) * mask[:, :steps, None]
            n = _batch_size(raw)
            loss_sum += loss.item() * n
            sq_sum += err.sum().item()
            valid += int(mask[:, :steps].sum().item()) * target.shape[-1]
            seen += n
    if seen == 0:
        raise RuntimeError("no held-out samples to evaluate")
    seconds = time.perf_counter() - start
    return EvalResult(loss=loss_sum / seen, action_mse=sq_sum / max(valid, 1), num_examples=seen, seconds=seconds)


def metrics(result: TrainResult | EvalResult) -> Mapping[str, float | int]:
    """A result as Flower metric values (kebab-case keys)."""
    if isinstance(result, TrainResult):
        return {
            keys.TRAIN_LOSS: result.loss,
            keys.NUM_EXAMPLES: result.num_examples,
            "train-steps": result.steps,
            "train-seconds": result.seconds,
        }
    return {
        keys.EVAL_LOSS: result.loss,
        keys.ACTION_MSE: result.action_mse,
        keys.NUM_EXAMPLES: result.num_examples,
        "eval-seconds": result.seconds,
    }
