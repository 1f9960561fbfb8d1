"""Real processes, real crashes: SIGKILL a client mid-round, then the whole server mid-session."""

import os
import secrets

import psutil
import pytest

from processes import kill_tree, leftover, tiny_sets, wait_for, zk0bot
from zk0 import checkpoints
from zk0.deploy.process import free_port
from zk0.deploy.server import Server
from zk0.paths import server_dir


def history(state):
    return checkpoints.read_history(server_dir(state))


def scan_for(needles: list[str], *roots) -> list[str]:
    """Files under ``roots`` holding any of ``needles``."""
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and any(n.encode() in path.read_bytes() for n in needles):
                hits.append(str(path))
    return hits


def argv_holding(needles: list[str]) -> list[str]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if any(n in line for n in needles):
            out.append(line)
    return out


@pytest.mark.slow
def test_a_killed_client_and_a_killed_server_lose_nothing_and_leak_no_token(kit, tmp_path):
    server_state, node_state = tmp_path / "server", tmp_path / "nodes"
    # Planted hub tokens, one in the environment and one in a token file (huggingface_hub's HF_TOKEN_PATH).
    token, file_token = f"hf_planted{secrets.token_hex(12)}", f"hf_planted{secrets.token_hex(12)}"
    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text(file_token)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": token}
    file_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN_PATH": str(token_file)}
    port = free_port()
    settings = tiny_sets(kit.backbone, **{"local-steps": 1, "fraction-evaluate": 0.0})

    def server_start():
        args = ("server", "start", "--port", str(port), "--min-clients", "2", "--rounds", "4", *settings)
        result = zk0bot(*args, state=server_state, env=env)
        assert result.returncode == 0, result.stderr

    def client_start(name, dataset, client_env):
        result = zk0bot(
            "client", "start", f"local:{dataset}", f"--server=127.0.0.1:{port}", f"--name={name}", "--num-workers=0",
            state=node_state, env=client_env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    try:
        server_start()
        client_start("a", kit.datasets[0], env)
        client_start("b", kit.datasets[1], file_env)
        client_start("c", kit.datasets[1], env)
        assert argv_holding([token, file_token]) == []

        # SIGKILL client c (SuperNode, SuperExec, ClientApp) while it trains.
        c_log = node_state / "clients" / "c" / "supernode.log"
        wait_for(lambda: "Receiving: train message" in c_log.read_text(), 300, "client c to get a train message")
        killed_in = len(history(server_state)) + 1  # the round c was training in
        kill_tree(int((node_state / "clients" / "c" / "supernode.pid").read_text().split()[0]))
        # The round completes with the survivors once Flower declares c dead (heartbeat), and goes on.
        line = wait_for(
            lambda: next((h for h in history(server_state) if h["round"] == killed_in), None), 300, "that round"
        )
        assert line["accepted"] == 2 and line["rejected"] == 1 and "train" in line

        # SIGKILL the whole server mid-session: SuperLink, SuperExec, ServerApp and controller at once.
        server = Server(server_state)
        pids = server.running()
        for pid in pids.values():
            kill_tree(pid)
        _, saved = checkpoints.load_global(server_dir(server_state))
        done = int(saved["round"])
        assert done >= killed_in and done < 4, "killed mid-session"
        first_run = history(server_state)[-1]["run-id"]

        # Start again: the survivors reconnect and the next session resumes at done + 1 from the saved digest.
        server_start()
        resumed = wait_for(
            lambda: next((h for h in history(server_state) if h["run-id"] != first_run), None), 400, "a resumed round"
        )
        assert resumed["round"] == done + 1
        assert resumed["start-digest"] == saved["digest"]
        assert resumed["accepted"] == 2
        assert argv_holding([token, file_token]) == []
    finally:
        zk0bot("client", "stop", "--all", state=node_state)
        zk0bot("server", "stop", state=server_state)
    assert leftover(tmp_path) == ""
    # No token in any log, pid, config, checkpoint or history file of the run.
    assert scan_for([token, file_token], server_state, node_state) == []
