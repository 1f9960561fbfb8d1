"""Flower's Control API from Python: the calls ``flwr ls``, ``flwr supernode ls`` and ``flwr run`` make.

Flower exposes no stable Python API for these; its CLI's helpers are
internal, so every use of them is wrapped here, in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ONLINE = "online"
FINISHED = "finished"


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    status: str  # pending | starting | running | finished
    sub_status: str  # completed | failed | stopped, once finished
    bytes_sent: int
    bytes_recv: int


class Control:
    """A Control API client for one SuperLink (insecure on loopback, or TLS with a CA file)."""

    def __init__(self, address: str, *, root_certificates: Path | None = None) -> None:
        from flwr.cli.typing import SuperLinkConnection
        from flwr.cli.utils import init_http_client_from_connection

        connection = SuperLinkConnection(
            name="zk0",
            address=address,
            root_certificates=str(root_certificates) if root_certificates else None,
            insecure=root_certificates is None,
        )
        # Flower's helper announces the connection on stdout, which carries data only here.
        with contextlib.redirect_stdout(io.StringIO()):
            self._client = init_http_client_from_connection(connection)

    def close(self) -> None:
        self._client.close()

    def online_nodes(self) -> list[int]:
        """Ids of the SuperNodes that are online now."""
        from flwr.proto.control_pb2 import ListNodesRequest  # pylint: disable=E0611

        res = self._client.ListNodes(ListNodesRequest())
        return sorted(node.node_id for node in res.nodes_info if node.status == ONLINE)

    def runs(self) -> list[RunInfo]:
        """All runs the SuperLink knows, oldest first."""
        from flwr.common.serde import run_from_proto
        from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=E0611

        res = self._client.ListRuns(ListRunsRequest())
        runs = [run_from_proto(proto) for proto in res.run_dict.values()]
        return [
            RunInfo(r.run_id, r.status.status, r.status.sub_status, r.bytes_sent, r.bytes_recv)
            for r in sorted(runs, key=lambda r: r.pending_at)
        ]

    def register_node(self, public_key: bytes, name: str | None = None) -> int | None:
        """Allow the SuperNode holding this key (``flwr supernode register``); its node id, None if allowed already."""
        import httpx
        from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611

        try:
            res = self._client.RegisterNode(RegisterNodeRequest(public_key=public_key, name=name))
        except httpx.HTTPStatusError as err:
            if err.response.status_code == httpx.codes.PRECONDITION_FAILED:  # Flower: public key already in use
                return None
            raise
        if not res.node_id:
            raise RuntimeError("the SuperLink did not register the key")
        return res.node_id

    def stop_run(self, run_id: int) -> None:
        """Stop a run (``flwr stop``)."""
        from flwr.proto.control_pb2 import StopRunRequest  # pylint: disable=E0611

        self._client.StopRun(StopRunRequest(run_id=run_id))

    def logs(self, run_id: int) -> Iterator[str]:
        """The ServerApp's log of a run, chunk by chunk, until the run finishes (``flwr log --stream``)."""
        from flwr.proto.control_pb2 import StreamLogsRequest  # pylint: disable=E0611

        for res in self._client.StreamLogs(StreamLogsRequest(run_id=run_id, after_timestamp=0.0)):
            yield res.log_output

    def start_run(self, fab_bytes: bytes, overrides: Mapping[str, Any]) -> int:
        """Start a run of the app bundle ``fab_bytes`` (see :func:`build_fab`) with run-config ``overrides``."""
        from flwr.common.config import parse_config_args
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=E0611
        from flwr.supercore.fab import Fab

        fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
        args = [" ".join(f"{k}={_toml_value(v)}" for k, v in overrides.items())] if overrides else None
        req = StartRunRequest(fab=fab_to_proto(fab), override_config=user_config_to_proto(parse_config_args(args)))
        res = self._client.StartRun(req)
        if not res.HasField("run_id"):
            raise RuntimeError("the SuperLink did not start the run")
        return res.run_id


def build_fab() -> bytes:
    """zk0's Flower app bundle: pyproject.toml and the package's Python files.

    They are staged in a temporary directory first, so Flower does not walk
    a whole checkout (a virtual environment there costs seconds); the same
    works from an installed wheel.
    """
    from flwr.cli.build import build_fab_from_disk

    import zk0
    from zk0.paths import app_pyproject

    package = Path(zk0.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="zk0-fab-") as tmp:
        stage = Path(tmp)
        shutil.copy2(app_pyproject(), stage / "pyproject.toml")
        for path in package.rglob("*.py"):
            target = stage / "src" / "zk0" / path.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        return build_fab_from_disk(stage)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
