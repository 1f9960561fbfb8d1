"""TLS material for the server and node keys for SuperNode authentication, made with ``cryptography``.

The server keeps a private CA and a server certificate in ``<state>/tls``:
operators share ``ca.pem`` (and its SHA-256 fingerprint, to compare over a
second channel) with node owners. Each node has an ECDSA P-384 key pair in
OpenSSH format, the format Flower's ``--auth-supernode-private-key`` and
``flwr supernode register`` read; the server allows a node by its public key.
Private keys are written with mode 0600, atomically.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zk0.errors import DeployError

CA_DAYS = 3650
CERT_DAYS = 825
# Names the server certificate always carries: the controller and zk0bot reach the SuperLink on loopback.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerTls:
    """The files ``flower-superlink --ssl-*`` reads."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.ca_key, self.cert, self.key))


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte on, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1())


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _certificate(subject: str, public_key, issuer_name, signing_key, days: int, *, ca: bool, names=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(n) for n in names]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA384())


def _load_cert(path: Path):
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def cert_names(path: Path) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    from cryptography import x509

    san = _load_cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def fingerprint(path: Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, as ``AB:CD:...`` (what ``openssl x509 -fingerprint`` prints)."""
    from cryptography.hazmat.primitives import hashes

    return _load_cert(path).fingerprint(hashes.SHA256()).hex(":").upper()


def server_names(host: str, extra: Iterable[str]) -> list[str]:
    """Names for the server certificate: ``extra``, the listen host unless a wildcard, and loopback."""
    names = [n for n in (*extra, host) if n and n not in ("0.0.0.0", "::")]
    return list(dict.fromkeys([*names, *LOOPBACK_NAMES]))


def init_server(directory: Path, names: Iterable[str]) -> ServerTls:
    """Create the CA (once) and a server certificate valid for ``names``.

    An existing CA is kept, so nodes holding ``ca.pem`` keep working; the server
    certificate is re-issued only when it lacks one of ``names``.
    """
    from cryptography.hazmat.primitives import serialization

    tls = ServerTls(directory)
    names = list(names)
    if tls.exists() and set(names) <= cert_names(tls.cert):
        return tls
    if tls.ca_cert.is_file() and tls.ca_key.is_file():
        ca_key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), None)
        ca_cert = _load_cert(tls.ca_cert)
    else:
        ca_key = _new_key()
        ca_cert = _certificate("zk0 federation CA", ca_key.public_key(), None, ca_key, CA_DAYS, ca=True)
        _write(tls.ca_key, _key_pem(ca_key), 0o600)
        _write(tls.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key = _new_key()
    cert = _certificate(names[0], key.public_key(), ca_cert.subject, ca_key, CERT_DAYS, ca=False, names=names)
    _write(tls.key, _key_pem(key), 0o600)
    _write(tls.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return tls


def keygen(private: Path) -> Path:
    """Write a node key pair: ``private`` (OpenSSH, 0600) and ``private.pub``; refuses to overwrite."""
    from cryptography.hazmat.primitives import serialization

    public = private.with_name(private.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise DeployError(f"{path} already exists; pick another name or remove the old key first")
    key = _new_key()
    _write(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        0o600,
    )
    _write(
        public,
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n",
        0o644,
    )
    return public


def read_public_key(path: Path) -> bytes:
    """A node's public key file as the bytes Flower registers; DeployError if it is not an EC OpenSSH key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except OSError as err:
        raise DeployError(f"cannot read public key {path}: {err.strerror}") from None
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise DeployError(f"{path} is not an ECDSA public key in OpenSSH format; make one with 'zk0bot client keygen'")
    return public_key_to_bytes(key)


def check_private_key(path: Path) -> None:
    """Refuse a node key Flower's SuperNode could not use, before it is started."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except OSError as err:
        raise DeployError(f"cannot read node key {path}: {err.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeployError(f"{path} is not an ECDSA private key in OpenSSH format; make one with 'zk0bot client keygen'")


def check_ca_cert(path: Path) -> None:
    """Refuse a CA file that is not a PEM certificate."""
    try:
        _load_cert(path)
    except OSError as err:
        raise DeployError(f"cannot read CA certificate {path}: {err.strerror}") from None
    except ValueError:
        raise DeployError(f"{path} is not a PEM certificate; use the ca.pem the server operator shared") from None
