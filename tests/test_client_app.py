"""The ClientApp's work in-process: real tiny SmolVLA, real LeRobot dataset files, no Flower processes."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from zk0.client_app import fit, score
from zk0.config import RunConfig
from zk0.integrity import IntegrityError, digest
from zk0.policy import build_policy, from_arrays, to_arrays, trainable_state
from zk0.task import resolve_device


def context(run_config: dict, dataset, **node) -> Context:
    node_config = {"dataset-uri": f"local:{dataset}", "num-workers": 0, **node}
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config)


@pytest.fixture(scope="module")
def initial(tiny_run_config):
    return trainable_state(build_policy(RunConfig.from_run_config(tiny_run_config)))


def round_config(arrays: ArrayRecord, mu: float = 0.0) -> ConfigRecord:
    """What the strategy sends along: round settings and the digest of the arrays."""
    return ConfigRecord({"server-round": 1, "learning-rate": 1e-3, "proximal-mu": mu, "arrays-digest": digest(arrays)})


def sent(tensors) -> tuple[ArrayRecord, ConfigRecord]:
    arrays = to_arrays(tensors, "float32")
    return arrays, round_config(arrays)


def measured(metrics) -> dict:
    """Evaluation metrics without the time they took."""
    return {k: v for k, v in metrics.items() if k != "eval-seconds"}


@pytest.fixture
def torch_threads():
    """Restores this process's torch threads after a test that sets them through the node setting."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_fit_returns_exactly_the_trainable_parameters_in_the_wire_dtype(tiny_run_config, kit, initial, torch_threads):
    run_config = tiny_run_config | {"wire-dtype": "bfloat16"}
    torch.set_num_threads(2)

    arrays, metrics, _, start = fit(*sent(initial), context(run_config, kit.datasets[1], threads=1))

    assert torch.get_num_threads() == 1  # the node's share of the machine's cores

    assert list(arrays) == list(initial)
    assert {a.dtype for a in arrays.values()} == {"bfloat16"}
    trained = from_arrays(arrays)
    assert any(not torch.equal(trained[k], initial[k].bfloat16().float()) for k in initial)
    # Samples seen, not batches: 3 steps of 4.
    assert metrics["num-examples"] == 12 and metrics["train-steps"] == 3
    assert metrics["train-loss"] > 0
    assert start is None  # the server did not ask for an evaluation first


def test_proximal_term_keeps_the_update_closer_to_the_global_model(tiny_run_config, kit, initial):
    run_config = tiny_run_config | {"local-steps": 4}
    ctx = context(run_config, kit.datasets[0])

    def drift(mu: float) -> float:
        arrays = to_arrays(initial, "float32")
        arrays, _, _, _ = fit(arrays, round_config(arrays, mu), ctx)
        trained = from_arrays(arrays)
        return sum((trained[k] - initial[k]).pow(2).sum().item() for k in initial)

    assert drift(1e4) < drift(0.0)


def test_evaluate_first_scores_the_received_model_before_training_it(tiny_run_config, kit, initial):
    ctx = context(tiny_run_config, kit.datasets[0])
    arrays, config = sent(initial)
    config["evaluate-first"] = True

    _, metrics, _, start = fit(arrays, config, ctx)

    # Exactly what an evaluate message would have measured on the same model, then training went on.
    assert measured(start) == measured(score(*sent(initial), ctx))
    assert metrics["train-steps"] == tiny_run_config["local-steps"]


def test_int8_compression_sends_deltas_the_server_decodes_to_the_trained_values(tiny_run_config, kit, initial):
    from zk0.compression import decode_tensor

    ctx = context(tiny_run_config, kit.datasets[1])
    plain, *_ = fit(*sent(initial), ctx)
    compressed, *_ = fit(*sent(initial), context(tiny_run_config | {"update-compression": "int8"}, kit.datasets[1]))

    assert {a.dtype for a in compressed.values()} == {"int8"}
    payload = sum(len(a.data) for a in compressed.values())
    assert payload == sum(v.numel() for v in initial.values()) + 4 * len(initial)  # a byte a value, a scale a tensor
    trained = from_arrays(plain)  # the same seeded training, uncompressed
    for name, value in trained.items():
        scale = (value - initial[name]).abs().max().item() / 127
        assert (decode_tensor(name, compressed[name], initial) - value).abs().max().item() <= scale / 2 + 1e-6


def test_evaluation_is_seeded_and_depends_on_the_weights(tiny_run_config, kit, initial):
    ctx = context(tiny_run_config, kit.datasets[0])

    first = measured(score(*sent(initial), ctx))
    again = measured(score(*sent(initial), ctx))
    other = measured(score(*sent({k: v * 1.5 for k, v in initial.items()}), ctx))

    assert first == again
    assert first["eval-loss"] > 0 and first["action-mse"] > 0 and first["num-examples"] > 0
    assert other["action-mse"] != first["action-mse"]


def test_camera_map_from_the_node_config_is_applied(tiny_run_config, kit, initial):
    ctx = context(tiny_run_config, kit.datasets[1], **{"camera-map": "phone=camera3"})

    metrics = dict(score(*sent(initial), ctx))

    assert metrics["num-examples"] > 0


def test_parameters_that_do_not_match_the_servers_digest_are_refused(tiny_run_config, kit, initial):
    arrays, config = sent(initial)
    name = next(iter(arrays))
    arrays[name] = to_arrays({name: initial[name] + 1}, "float32")[name]  # altered in transit

    with pytest.raises(IntegrityError, match="do not match the server's digest"):
        fit(arrays, config, context(tiny_run_config, kit.datasets[0]))


def test_auto_device_is_cpu_here_and_cuda_without_a_gpu_is_an_error():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
