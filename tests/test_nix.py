"""Nix: every .nix file parses, the flake evaluates offline, the NixOS modules produce the intended units.

What can run without nixpkgs or a network runs here: ``nix-instantiate --parse``, flake evaluations that
do not force nixpkgs (on a copy of the flake files as a ``path:`` flake, so the working tree's state and
its .venv stay out of the store), reading flake.lock, and contract tests that evaluate nixos-modules/
with the stand-in lib in tests/nix and compare the units with hand-written expectations. Real builds,
the VM test and the flake.lock hashes need Nix with network access (docs/NIX.md).

Without ``nix`` on PATH these tests skip, unless ``ZK0_REQUIRE_NIX=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NIX_DIRS = ("pkgs", "nixos-modules", "tests/nix")
NIX_FILES = sorted(["flake.nix", *(str(p.relative_to(ROOT)) for d in NIX_DIRS for p in (ROOT / d).glob("*.nix"))])
FLAKE_FILES = ("flake.nix", "flake.lock", "pyproject.toml", "uv.lock", *NIX_DIRS)
FLAKES = ["--extra-experimental-features", "nix-command flakes"]
EVAL = ROOT / "tests" / "nix" / "eval.nix"

STUB = "/nix/store/00000000000000000000000000000000-zk0"  # the stub package in tests/nix/eval.nix
BIN = f"{STUB}/bin/zk0bot"
SERVER_DIR = "/var/lib/zk0-server"
CLIENT_DIR = "/var/lib/zk0-client"


@pytest.fixture(autouse=True)
def nix_available():
    missing = [tool for tool in ("nix", "nix-instantiate") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not on PATH (Debian: apt-get install nix-bin)"
        if os.environ.get("ZK0_REQUIRE_NIX") == "1":
            pytest.fail(f"ZK0_REQUIRE_NIX=1 but {reason}")
        pytest.skip(reason)


def run(*args: str, cwd: Path = ROOT) -> str:
    """Run a Nix command; on failure show its stderr (Nix's error message) in the test report."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def evaluate(config: str) -> dict:
    """The units, firewall ports, warnings and failed assertions for a module configuration (Nix syntax)."""
    expr = f"import {EVAL} {{ config = {config}; }}"
    return json.loads(run("nix-instantiate", "--eval", "--strict", "--json", "--expr", expr))


def evaluation_error(config: str) -> str:
    expr = f"import {EVAL} {{ config = {config}; }}"
    result = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, f"evaluation succeeded: {result.stdout}"
    return result.stderr


def exec_args(unit: dict, key: str = "ExecStart") -> list[str]:
    return shlex.split(unit["serviceConfig"][key])


@pytest.fixture(scope="module")
def flake(tmp_path_factory) -> str:
    """A copy of just the flake's files, as a path: flake reference."""
    copy = tmp_path_factory.mktemp("flake")
    for name in FLAKE_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name)
        else:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return f"path:{copy}"


def flake_eval(flake: str, attr: str, apply: str) -> object:
    command = ["nix", *FLAKES, "--offline", "eval", "--no-update-lock-file", "--json", f"{flake}#{attr}"]
    out = run(*command, "--apply", apply)
    return json.loads(out)


# --- parse ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", NIX_FILES)
def test_nix_file_parses(path):
    run("nix-instantiate", "--parse", path)


def test_every_nix_file_is_checked():
    # Prepare: the .nix files anywhere in the repository, outside hidden dirs (.git, .venv)
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found += [str((Path(directory) / f).relative_to(ROOT)) for f in files if f.endswith(".nix")]
    found.sort()

    # Assert
    assert found == NIX_FILES


# --- the flake, offline -----------------------------------------------------------------------------

PINNED = {
    "nixpkgs": ("NixOS", "nixpkgs", "94def634a20494ee057c76998843c015909d6311"),
    "pyproject-nix": ("pyproject-nix", "pyproject.nix", "62cc4495b3b2d2a259db321a06584378e93843a6"),
    "uv2nix": ("pyproject-nix", "uv2nix", "656928e823e305426200f478a887943a600db303"),
    "pyproject-build-systems": ("pyproject-nix", "build-system-pkgs", "45888b7fd4bf36c57acc55f07917bdf49ec89ec9"),
}


def test_flake_lock_pins_public_github_revisions(flake):
    # Execute: Nix reads the lock (and checks it matches flake.nix's inputs) without fetching
    metadata = json.loads(
        run("nix", *FLAKES, "--offline", "flake", "metadata", "--json", "--no-update-lock-file", flake)
    )

    # Assert
    nodes = metadata["locks"]["nodes"]
    assert nodes["root"]["inputs"] == {name: name for name in PINNED}
    for name, (owner, repo, rev) in PINNED.items():
        locked = nodes[name]["locked"]
        assert (locked["type"], locked["owner"], locked["repo"], locked["rev"]) == ("github", owner, repo, rev)
        assert locked["narHash"].startswith("sha256-") and len(locked["narHash"]) == 51


def test_flake_inputs_all_follow_one_nixpkgs():
    # Prepare
    nodes = json.loads((ROOT / "flake.lock").read_text())["nodes"]

    # Assert: one nixpkgs node, every other input points at the root's inputs
    assert sorted(nodes) == ["nixpkgs", "pyproject-build-systems", "pyproject-nix", "root", "uv2nix"]
    assert nodes["pyproject-nix"]["inputs"] == {"nixpkgs": ["nixpkgs"]}
    assert nodes["uv2nix"]["inputs"] == {"nixpkgs": ["nixpkgs"], "pyproject-nix": ["pyproject-nix"]}
    assert nodes["pyproject-build-systems"]["inputs"] == {
        "nixpkgs": ["nixpkgs"],
        "pyproject-nix": ["pyproject-nix"],
        "uv2nix": ["uv2nix"],
    }
    # Nix 2.8 rejects relative path: inputs written by newer Nix
    assert all(node.get("locked", {}).get("type") == "github" for name, node in nodes.items() if name != "root")


def test_flake_outputs_list_offline(flake):
    # Execute: names only, which must not force nixpkgs
    names = {
        attr: flake_eval(flake, attr, "builtins.attrNames")
        for attr in (
            "nixosModules",
            "apps.x86_64-linux",
            "packages.x86_64-linux",
            "checks.x86_64-linux",
            "devShells.x86_64-linux",
            "packages",
        )
    }

    # Assert
    assert names == {
        "nixosModules": ["client", "default", "server"],
        "apps.x86_64-linux": ["client", "default", "demo", "server"],
        "packages.x86_64-linux": [
            "client-image",
            "default",
            "offline-kit",
            "server-image",
            "zk0",
            "zk0-cuda",
        ],
        "checks.x86_64-linux": ["module-contracts", "unit-tests", "vm-federation"],
        "devShells.x86_64-linux": ["default"],
        "packages": ["aarch64-linux", "x86_64-linux"],
    }


def test_nixos_modules_are_import_lists(flake):
    # Execute: Nix 2.8's flake check needs { imports = [ ... ]; }, not a bare path
    apply = "builtins.mapAttrs (n: m: { keys = builtins.attrNames m; n = builtins.length m.imports; })"
    shape = flake_eval(flake, "nixosModules", apply)

    # Assert: each service module brings its file and the flake's default package
    assert shape == {
        "server": {"keys": ["imports"], "n": 2},
        "client": {"keys": ["imports"], "n": 2},
        "default": {"keys": ["imports"], "n": 2},
    }


def test_flake_check_contracts_hold():
    # Execute: the contract facts checks.<system>.module-contracts asserts, without a pkgs
    expr = f"import {ROOT}/tests/nix/check.nix {{ pkgs = {{ writeText = name: text: text; }}; }}"
    facts = json.loads(json.loads(run("nix-instantiate", "--eval", "--strict", "--json", "--expr", expr)))

    # Assert
    assert facts == {
        "credentials": True,
        "datasetAsserted": True,
        "dynamicUser": True,
        "firewallClosed": True,
        "noFailedAssertions": True,
        "tokenPathOnly": True,
    }


# --- module contracts: server -----------------------------------------------------------------------


def test_nothing_enabled_defines_no_units():
    result = evaluate("{ }")

    assert result["units"] == {}
    assert result["firewall"] == []
    assert result["failedAssertions"] == []


def test_server_defaults_run_on_loopback_in_a_sandbox():
    # Execute
    result = evaluate("{ services.zk0.server.enable = true; }")

    # Assert
    unit = result["units"]["zk0-server"]
    assert exec_args(unit) == [
        BIN,
        "server",
        "start",
        "--foreground",
        "--state-dir",
        SERVER_DIR,
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--min-clients",
        "2",
        "--rounds",
        "3",
    ]
    service = unit["serviceConfig"]
    assert service["DynamicUser"] is True
    assert service["StateDirectory"] == "zk0-server"
    assert service["PrivateDevices"] is True
    assert service["ProtectSystem"] == "strict"
    assert "MemoryDenyWriteExecute" not in service  # torch needs W+X memory
    assert unit["environment"]["ZK0_HOME"] == SERVER_DIR
    assert unit["path"] == [STUB]  # Flower finds flower-superexec on PATH
    assert unit["wantedBy"] == ["multi-user.target"]
    assert result["firewall"] == []
    assert result["warnings"] == []
    assert result["systemPackages"] == [STUB]  # zk0bot status / server allow for the operator


def test_server_options_become_arguments():
    # Execute
    result = evaluate(
        """{ services.zk0.server = {
          enable = true; host = "0.0.0.0"; port = 9000; minClients = 3; rounds = 10; tls = true;
          subjectAltNames = [ "fl.example.org" "192.0.2.10" ];
          settings = {
            local-steps = 200; learning-rate = 1.0e-4; model = "/srv/models/m%1"; seed = 0; fedprox = false;
          };
        }; }"""
    )

    # Assert: settings in name order; floats via toJSON; % escaped for systemd
    args = exec_args(result["units"]["zk0-server"])
    assert args[5:] == [
        SERVER_DIR,
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--min-clients",
        "3",
        "--rounds",
        "10",
        "--set",
        "fedprox=false",
        "--set",
        "learning-rate=0.0001",
        "--set",
        "local-steps=200",
        "--set",
        "model=/srv/models/m%%1",
        "--set",
        "seed=0",
        "--tls",
        "--san",
        "fl.example.org",
        "--san",
        "192.0.2.10",
    ]
    assert result["firewall"] == []  # openFirewall stays false unless asked


@pytest.mark.parametrize(("tls", "flags"), [("null", []), ("true", ["--tls"]), ("false", ["--insecure"])])
def test_server_tls_choice(tls, flags):
    result = evaluate(f"{{ services.zk0.server = {{ enable = true; tls = {tls}; }}; }}")

    assert [a for a in exec_args(result["units"]["zk0-server"]) if a in ("--tls", "--insecure")] == flags


def test_server_allows_the_configured_node_keys_after_each_start():
    keys = '[ "/etc/zk0/keys/arm1.pub" "/etc/zk0/keys/arm2.pub" ]'
    result = evaluate(
        f'{{ services.zk0.server = {{ enable = true; host = "0.0.0.0"; authorizedKeyFiles = {keys}; }}; }}'
    )

    unit = result["units"]["zk0-server"]
    assert exec_args(unit, "ExecStartPost") == [
        BIN,
        "server",
        "allow",
        "--state-dir",
        SERVER_DIR,
        "--wait",
        "300",
        "/etc/zk0/keys/arm1.pub",
        "/etc/zk0/keys/arm2.pub",
    ]
    assert (
        "ExecStartPost"
        not in evaluate("{ services.zk0.server.enable = true; }")["units"]["zk0-server"]["serviceConfig"]
    )


def test_server_open_firewall_opens_only_its_port():
    result = evaluate("{ services.zk0.server = { enable = true; port = 8443; openFirewall = true; }; }")

    assert result["firewall"] == [8443]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            'tls = false; subjectAltNames = [ "fl.example.org" ];',
            "services.zk0.server.subjectAltNames needs TLS: no certificate is made when "
            "services.zk0.server.tls = false.",
        ),
        (
            'tls = false; authorizedKeyFiles = [ "/etc/zk0/keys/arm1.pub" ];',
            "services.zk0.server.authorizedKeyFiles needs TLS: with services.zk0.server.tls = false any node may join.",
        ),
    ],
)
def test_server_bad_combinations_fail_with_a_message(config, message):
    result = evaluate(f"{{ services.zk0.server = {{ enable = true; {config} }}; }}")

    assert result["failedAssertions"] == [message]


# --- module contracts: client -----------------------------------------------------------------------

CLIENT_TLS = """{ services.zk0.client = {
  enable = true; datasetUri = "hf:me/so100@v2"; serverAddress = "fl.example.org:8000"; name = "arm1";
  caCertFile = "/etc/zk0/ca.pem"; nodeKeyFile = "/run/secrets/zk0-node-key"; hfTokenFile = "/run/secrets/hf-token";
  cameraMap = { front = "camera1"; wrist = "camera2"; };
}; }"""


def test_client_with_tls_gets_secrets_as_credentials():
    # Execute
    result = evaluate(CLIENT_TLS)

    # Assert
    unit = result["units"]["zk0-client"]
    assert exec_args(unit) == [
        BIN,
        "client",
        "start",
        "hf:me/so100@v2",
        "--foreground",
        "--state-dir",
        CLIENT_DIR,
        "--server",
        "fl.example.org:8000",
        "--name",
        "arm1",
        "--device",
        "cpu",
        "--camera-map",
        "front=camera1,wrist=camera2",
        "--ca-cert",
        "%d/ca-cert",
        "--key",
        "%d/node-key",
    ]
    service = unit["serviceConfig"]
    assert service["LoadCredential"] == [
        "ca-cert:/etc/zk0/ca.pem",
        "node-key:/run/secrets/zk0-node-key",
        "hf-token:/run/secrets/hf-token",
    ]
    assert unit["environment"] == {
        "ZK0_HOME": CLIENT_DIR,
        "HOME": CLIENT_DIR,
        "HF_HOME": "/var/cache/zk0-client/huggingface",
        "HF_TOKEN_PATH": "%d/hf-token",
    }
    assert service["DynamicUser"] is True
    assert service["StateDirectory"] == "zk0-client"
    assert service["CacheDirectory"] == "zk0-client"
    assert unit["path"] == [STUB]
    assert service["PrivateDevices"] is True
    assert "DeviceAllow" not in service
    assert "MemoryDenyWriteExecute" not in service
    assert result["failedAssertions"] == []


def test_client_secret_paths_appear_only_in_load_credential():
    # Execute
    unit = evaluate(CLIENT_TLS)["units"]["zk0-client"]

    # Assert: the unit's command line and environment name credentials, never the secret files
    visible = json.dumps({k: v for k, v in unit.items() if k != "serviceConfig"}) + unit["serviceConfig"]["ExecStart"]
    assert "/run/secrets" not in visible


def test_client_plaintext_has_no_credentials_and_cpu_device():
    # Execute
    result = evaluate(
        """{ networking.hostName = "robot7";
             services.zk0.client = {
               enable = true; datasetUri = "local:/data/so101"; serverAddress = "10.0.0.2:8000";
             }; }"""
    )

    # Assert: the name defaults to the host name
    unit = result["units"]["zk0-client"]
    assert exec_args(unit)[3:] == [
        "local:/data/so101",
        "--foreground",
        "--state-dir",
        CLIENT_DIR,
        "--server",
        "10.0.0.2:8000",
        "--name",
        "robot7",
        "--device",
        "cpu",
    ]
    assert unit["serviceConfig"]["LoadCredential"] == []
    assert "HF_TOKEN_PATH" not in unit["environment"]


def test_client_cuda_reaches_only_nvidia_devices():
    # Execute
    result = evaluate(
        """{ hardware.graphics.enable = true; services.zk0.client = { enable = true; cuda = true;
             datasetUri = "local:/data/so101"; serverAddress = "10.0.0.2:8000"; }; }"""
    )

    # Assert
    service = result["units"]["zk0-client"]["serviceConfig"]
    assert exec_args(result["units"]["zk0-client"])[-2:] == ["--device", "cuda"]
    assert service["PrivateDevices"] is False
    assert service["DevicePolicy"] == "closed"
    assert service["DeviceAllow"] == ["char-nvidiactl", "char-nvidia-caps", "char-nvidia-frontend", "char-nvidia-uvm"]
    assert result["warnings"] == []


def test_client_cuda_without_graphics_warns():
    result = evaluate(
        """{ services.zk0.client = { enable = true; cuda = true;
             datasetUri = "local:/data/so101"; serverAddress = "10.0.0.2:8000"; }; }"""
    )

    assert result["warnings"] == [
        "services.zk0.client.cuda is set but hardware.graphics.enable is not: "
        "the NVIDIA user-space driver (libcuda) will be missing."
    ]


PAIR = (
    "services.zk0.client.caCertFile and services.zk0.client.nodeKeyFile go together: a TLS server admits only "
    "nodes whose key it allowed, and a node without the server's CA cannot use TLS. Set both (TLS) or neither "
    "(plaintext)."
)
BASE = 'enable = true; datasetUri = "hf:me/ds"; serverAddress = "s:8000";'


@pytest.mark.parametrize(
    ("config", "messages"),
    [
        (
            "enable = true;",
            [
                "services.zk0.client.datasetUri must be set: the node's dataset, `hf:owner/name` or `local:/abs/path`.",
                "services.zk0.client.serverAddress must be set: the federation server as `host:port`.",
            ],
        ),
        (
            'enable = true; datasetUri = "data/so100"; serverAddress = "s:8000";',
            ['services.zk0.client.datasetUri = "data/so100" is not `hf:owner/name` or `local:/abs/path`.'],
        ),
        (BASE + ' caCertFile = "/etc/zk0/ca.pem";', [PAIR]),
        (BASE + ' nodeKeyFile = "/run/secrets/key";', [PAIR]),
        (
            BASE + ' caCertFile = "/etc/zk0/ca.pem"; nodeKeyFile = "/nix/store/0000-key";',
            [
                "services.zk0.client.nodeKeyFile and services.zk0.client.hfTokenFile must not be in the Nix store, "
                "which every user can read."
            ],
        ),
        (
            BASE + ' hfTokenFile = "secrets/hf-token";',
            ["services.zk0.client.nodeKeyFile and services.zk0.client.hfTokenFile must be absolute paths."],
        ),
    ],
    ids=["no-dataset-no-server", "bad-uri", "ca-without-key", "key-without-ca", "key-in-store", "relative-token"],
)
def test_client_bad_combinations_fail_with_a_message(config, messages):
    result = evaluate(f"{{ services.zk0.client = {{ {config} }}; }}")

    assert result == {"failedAssertions": messages}


# --- the stand-in module system refuses what NixOS refuses ------------------------------------------


def test_out_of_range_port_is_a_type_error():
    error = evaluation_error("{ services.zk0.server = { enable = true; port = 70000; }; }")

    assert "A definition for option `services.zk0.server.port' is not of type" in error


def test_misspelt_option_does_not_exist():
    error = evaluation_error("{ services.zk0.server.enabled = true; }")

    assert "The option `services.zk0.server.enabled' does not exist." in error


def test_secret_file_as_nix_path_is_refused():
    # A Nix path literal would be copied into the world-readable store; the option takes a string
    error = evaluation_error(f"{{ services.zk0.client = {{ {BASE} hfTokenFile = {ROOT}/README.md; }}; }}")

    assert "services.zk0.client.hfTokenFile' is not of type `null or string'" in error
