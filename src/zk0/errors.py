"""Errors a user can fix; zk0bot shows them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Base of every error whose message tells the user what to change."""


class ConfigError(UserError, ValueError):
    """A run or node setting is missing, of the wrong type or out of range."""


class DatasetError(UserError, ValueError):
    """A dataset URI is malformed, or the dataset cannot serve an SO-100 policy."""


class PolicyError(UserError, ValueError):
    """The model setting names nothing SmolVLA can be built from, or parameters do not fit it."""


class DeployError(UserError, RuntimeError):
    """A lifecycle request the user can fix (already running, port in use, unknown client, ...)."""


class RuntimeFailure(Exception):
    """Something failed while running; the message names the log to read. zk0bot exits with code 1."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """An error's message on one line, at most ``limit`` characters (its type name if it has none)."""
    text = " ".join(str(err).split())
    return (text[: limit - 3] + "...") if len(text) > limit else text or type(err).__name__
