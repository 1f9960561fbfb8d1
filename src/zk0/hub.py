"""Optional push of a round's checkpoint directory to the Hugging Face hub.

Off unless ``hub-repo-id`` is set. huggingface_hub reads the token from the
environment itself (``HF_TOKEN`` or ``HF_TOKEN_PATH``); zk0 never passes it on.
Uploads go through the hub's HTTP API, never git. A push sends one round's
checkpoint directory; the federation key, the round history, hidden or
temporary files and wandb files are never sent, whatever directory is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zk0.checkpoints import HISTORY_FILE, KEY_FILE, saved_round
from zk0.errors import ConfigError, one_line

# Never uploaded (fnmatch patterns on paths relative to the pushed directory).
NEVER_UPLOADED: tuple[str, ...] = (KEY_FILE, HISTORY_FILE, ".*", "*/.*", "wandb/*")


class HubPushError(RuntimeError):
    """A push failed (network, auth, hub error); the caller logs it and training goes on."""


def check_repo_id(repo_id: str) -> None:
    """Raise ConfigError for a malformed hub repo id; empty means off and is fine."""
    if not repo_id:
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"setting 'hub-repo-id' must be 'name' or 'owner/name' on the hub, got {repo_id!r}") from err


def should_push(repo_id: str, round: int, *, checkpoint_every: int, final: bool) -> bool:
    """Push when a repo is set and ``round`` is a checkpoint round (a multiple of ``checkpoint_every`` > 0) or final."""
    return bool(repo_id) and round >= 1 and saved_round(round, checkpoint_every, final=final)


def push(directory: Path, repo_id: str, round: int, *, api: Any = None) -> str:
    """Upload ``directory`` (a round's checkpoint) to the model repo ``repo_id``, made if missing; the commit URL.

    ``api`` is an object with HfApi's ``create_repo`` and ``upload_folder`` (default: a new ``HfApi()``).
    """
    import httpx

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=directory,
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"zk0 global model, round {round}",
            ignore_patterns=list(NEVER_UPLOADED),
        )
    except (OSError, ValueError, httpx.HTTPError) as err:
        raise HubPushError(f"pushing round {round} to the hub repo {repo_id} failed: {one_line(err)}") from err
    return str(getattr(info, "commit_url", info))
