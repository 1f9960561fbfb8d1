"""TLS material, node keys, and a real TLS federation: only allowed nodes join."""

import hashlib
import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from processes import leftover, status, tiny_sets, wait_for, zk0bot
from zk0 import checkpoints
from zk0.cli import main
from zk0.deploy import DeployError, tls
from zk0.deploy.process import free_port


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_material_has_private_keys_0600_and_the_asked_names(tmp_path):
    made = tls.init_server(tmp_path, tls.server_names("0.0.0.0", ["fl.example.org", "203.0.113.7"]))

    assert mode(made.ca_key) == 0o600 and mode(made.key) == 0o600 and mode(made.ca_cert) == 0o644
    assert tls.cert_names(made.cert) == {"fl.example.org", "203.0.113.7", "localhost", "127.0.0.1", "::1"}
    # The server certificate is signed by the CA (raises if not).
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    x509.load_pem_x509_certificate(made.cert.read_bytes()).verify_directly_issued_by(ca)


def test_fingerprint_is_sha256_of_the_der_certificate(tmp_path):
    made = tls.init_server(tmp_path, ["localhost"])
    der = x509.load_pem_x509_certificate(made.ca_cert.read_bytes()).public_bytes(serialization.Encoding.DER)

    assert tls.fingerprint(made.ca_cert) == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def test_the_ca_is_kept_when_names_are_added(tmp_path):
    first = tls.init_server(tmp_path, ["localhost"])
    ca, cert = first.ca_cert.read_bytes(), first.cert.read_bytes()

    tls.init_server(tmp_path, ["localhost"])
    assert first.cert.read_bytes() == cert  # nothing new asked: nothing re-issued

    tls.init_server(tmp_path, ["localhost", "fl.example.org"])
    assert first.ca_cert.read_bytes() == ca  # nodes holding ca.pem keep working
    assert "fl.example.org" in tls.cert_names(first.cert)


def test_node_keys_are_openssh_p384_and_never_overwritten(tmp_path):
    public = tls.keygen(tmp_path / "arm1")

    key = serialization.load_ssh_private_key((tmp_path / "arm1").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert mode(tmp_path / "arm1") == 0o600
    assert len(tls.read_public_key(public)) > 0
    with pytest.raises(DeployError, match="already exists"):
        tls.keygen(tmp_path / "arm1")


def test_bad_key_and_certificate_files_are_refused(tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    for check in (tls.read_public_key, tls.check_private_key, tls.check_ca_cert):
        with pytest.raises(DeployError):
            check(junk)
    with pytest.raises(DeployError, match="cannot read"):
        tls.read_public_key(tmp_path / "missing.pub")


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def test_client_start_needs_both_ca_and_key(kit, tmp_path, capsys):
    tls.init_server(tmp_path / "tls", ["localhost"])
    base = ["client", "start", f"local:{kit.datasets[0]}", "--state-dir", str(tmp_path / "state")]

    code, err = run([*base, "--ca-cert", str(tmp_path / "tls" / "ca.pem")], capsys)
    assert code == 2 and "--ca-cert and --key go together" in err

    code, err = run(
        [*base, "--ca-cert", str(tmp_path / "tls" / "ca.key"), "--key", str(tmp_path / "tls" / "ca.key")], capsys
    )
    assert code == 2 and "is not a PEM certificate" in err and err.count("\n") == 1
    assert not (tmp_path / "state" / "clients").exists()


def test_server_allow_needs_a_running_server_and_real_keys(tmp_path, capsys):
    public = tls.keygen(tmp_path / "arm1")
    code, err = run(["server", "allow", str(public), "--state-dir", str(tmp_path), "--wait", "1"], capsys)
    assert code == 2 and "the server is not running" in err

    code, err = run(["server", "allow", str(tmp_path / "arm1"), "--state-dir", str(tmp_path)], capsys)
    assert code == 2 and "is not an ECDSA public key" in err


@pytest.mark.slow
def test_tls_server_admits_only_allowed_nodes(kit, tmp_path):
    server_state, node_state = tmp_path / "server", tmp_path / "nodes"
    port = free_port()
    address = f"127.0.0.1:{port}"
    try:
        started = zk0bot(
            "server", "start", "--tls", "--port", str(port), "--min-clients", "1", "--rounds", "1",
            *tiny_sets(kit.backbone), state=server_state,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        ca = server_state / "tls" / "ca.pem"
        assert f"CA SHA-256 fingerprint: {tls.fingerprint(ca)}" in started.stderr
        for name in ("arm1", "rogue"):
            assert zk0bot("client", "keygen", name, state=node_state).returncode == 0
        arm1_pub = str(node_state / "keys" / "arm1.pub")
        allowed = zk0bot("server", "allow", arm1_pub, "--wait", "30", state=server_state)
        assert allowed.returncode == 0 and "allowed as node" in allowed.stdout, allowed.stderr
        again = zk0bot("server", "allow", arm1_pub, state=server_state)  # e.g. a service restart: fine
        assert again.returncode == 0 and "allowed already" in again.stdout, again.stderr

        def client(name, dataset, *extra):
            result = zk0bot(
                "client", "start", f"local:{dataset}", f"--server={address}", f"--name={name}", "--num-workers=0",
                *extra, state=node_state,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr

        client("arm1", kit.datasets[0], f"--ca-cert={ca}", f"--key={node_state / 'keys' / 'arm1'}")
        client("rogue", kit.datasets[1], f"--ca-cert={ca}", f"--key={node_state / 'keys' / 'rogue'}")
        client("plain", kit.datasets[1])

        # The unregistered key is turned away: Flower's SuperNode exits with code 305.
        rogue_log = node_state / "clients" / "rogue" / "supernode.log"
        wait_for(lambda: "Exit Code: 305" in rogue_log.read_text(), 120, "the rogue node to be refused")
        # The allowed node trains a round over TLS; the controller (a Control API client) started it.
        line = wait_for(
            lambda: next((h for h in checkpoints.read_history(server_state / "server") if h["round"] == 1), None),
            400,
            "a round over TLS",
        )
        assert line["accepted"] == 1 and line["train"]["train-loss"] > 0
        shown = status(server_state)
        assert shown["server"]["tls"] is True and shown["online-nodes"] == 1  # the plaintext node never joined
        plain_log = (node_state / "clients" / "plain" / "supernode.log").read_text()
        assert "Connection attempt failed" in plain_log
        nodes = json.loads(zk0bot("status", "--json", state=node_state).stdout)["clients"]
        assert {c["name"]: c["up"] for c in nodes} == {"arm1": True, "plain": True, "rogue": False}
    finally:
        zk0bot("client", "stop", "--all", state=node_state)
        zk0bot("server", "stop", state=server_state)
    assert leftover(tmp_path) == ""
