"""Hub push: when it happens, repo id checks, the calls made (on a recording stand-in), and failure offline.

The push itself against the real hub is a manual check (docs/HUB.md): tests never reach the hub.
"""

import os

import pytest

from zk0 import hub
from zk0.checkpoints import GLOBAL_FILE, HISTORY_FILE, KEY_FILE
from zk0.errors import ConfigError

PLANTED_TOKEN = "hf_zk0planted" + "0123456789abcdef" * 2
COMMIT_URL = "https://huggingface.co/me/zk0-model/commit/0123abcd"


class RecordingApi:
    """Stands in for HfApi's two methods; lists the files upload_folder would send with the hub's own filter."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.sent: list[str] = []
        self.fail = fail

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        if self.fail:
            raise self.fail
        return f"https://huggingface.co/{args[0]}"

    def upload_folder(self, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        self.calls.append(("upload_folder", (), kwargs))
        folder = kwargs["folder_path"]
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        self.sent = list(
            filter_repo_objects(
                files, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=kwargs.get("ignore_patterns")
            )
        )
        return COMMIT_URL


# A round's checkpoint (LeRobot policy files and zk0's own), and what must never leave the server.
CHECKPOINT = ["config.json", GLOBAL_FILE, "model.safetensors", "policy_preprocessor.json"]
NEVER = [KEY_FILE, HISTORY_FILE, f".{GLOBAL_FILE}.tmp1", "sub/.hidden", "wandb/offline-run-1/run-1.wandb"]


@pytest.fixture
def round_dir(tmp_path):
    """A checkpoint directory holding, by mistake, the files that are never sent too."""
    directory = tmp_path / "server" / "checkpoints" / "round-00007"
    for name in CHECKPOINT + NEVER:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"x")
    return directory


@pytest.fixture
def git_spy(tmp_path, monkeypatch):
    """A `git` first on PATH that records any call and fails; yields the record file."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "git-calls"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


@pytest.mark.parametrize(
    ("repo_id", "rnd", "every", "final", "expected"),
    [
        ("", 5, 5, True, False),  # no repo: never
        ("me/m", 5, 5, False, True),  # a checkpoint round
        ("me/m", 10, 5, False, True),
        ("me/m", 6, 5, False, False),
        ("me/m", 6, 5, True, True),  # the session's last round
        ("me/m", 3, 0, False, False),  # checkpoint-every 0: only the final round
        ("me/m", 3, 0, True, True),
        ("me/m", 1, 1, False, True),
        ("me/m", 0, 1, True, False),  # round 0 is the untrained model
    ],
)
def test_should_push(repo_id, rnd, every, final, expected):
    assert hub.should_push(repo_id, rnd, checkpoint_every=every, final=final) is expected


@pytest.mark.parametrize("repo_id", ["", "me/zk0-model", "zk0-model", "org_1/model.v2"])
def test_check_repo_id_accepts(repo_id):
    hub.check_repo_id(repo_id)


@pytest.mark.parametrize("repo_id", ["me/team/model", "me/-model", "me/model name", "/model", "me/" + "x" * 97])
def test_check_repo_id_rejects_with_the_value_quoted(repo_id):
    with pytest.raises(ConfigError, match="hub-repo-id") as err:
        hub.check_repo_id(repo_id)

    assert repr(repo_id) in str(err.value)


def test_push_creates_the_repo_and_uploads_the_checkpoint_over_http(round_dir, git_spy):
    api = RecordingApi()

    url = hub.push(round_dir, "me/zk0-model", 7, api=api)

    assert url == COMMIT_URL
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1:] == (("me/zk0-model",), {"exist_ok": True, "repo_type": "model"})
    upload = api.calls[1][2]
    assert upload["folder_path"] == round_dir and upload["repo_id"] == "me/zk0-model"
    assert upload["repo_type"] == "model" and upload["commit_message"] == "zk0 global model, round 7"
    assert "token" not in upload and "token" not in api.calls[0][2]
    assert api.sent == CHECKPOINT  # not the key, the history, hidden, temp or wandb files
    assert not git_spy.exists()


def _hub_401():
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    response = httpx.Response(401, request=request)
    return HfHubHTTPError(
        "401 Client Error: Unauthorized\nInvalid credentials in Authorization header", response=response
    )


def _no_network():
    import httpx

    return httpx.ConnectError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize(("make", "reason"), [(_hub_401, "401 Client Error"), (_no_network, "[Errno -3]")])
def test_a_hub_or_network_error_becomes_one_line(round_dir, make, reason):
    api = RecordingApi(fail=make())

    with pytest.raises(hub.HubPushError) as err:
        hub.push(round_dir, "me/zk0-model", 3, api=api)

    assert isinstance(err.value, RuntimeError)
    assert str(err.value).startswith(f"pushing round 3 to the hub repo me/zk0-model failed: {reason}")
    assert "\n" not in str(err.value)


def test_the_real_client_offline_fails_in_one_line_without_git_or_the_token(round_dir, git_spy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)

    with pytest.raises(hub.HubPushError, match="offline mode is enabled") as err:
        hub.push(round_dir, "me/zk0-model", 2)

    assert "\n" not in str(err.value) and PLANTED_TOKEN not in str(err.value)
    assert not git_spy.exists()


def test_the_git_spy_sees_a_git_call(git_spy):
    import subprocess

    subprocess.run(["git", "status"], capture_output=True)

    assert git_spy.read_text() == "status\n"
