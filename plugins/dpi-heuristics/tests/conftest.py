"""Fixtures for the heuristics tests: real TLS handshakes from the ssl module (OpenSSL), in memory."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Handshake = Callable[..., tuple[bytes, bytes]]


@pytest.fixture(scope="session")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key for an in-memory TLS server."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dpicore.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="session")
def tls_handshake(server_cert: tuple[Path, Path]) -> Handshake:
    """``(client_hello, server_flight)`` bytes of a real OpenSSL handshake, through memory BIOs.

    ``sni`` and ``alpn`` go into the ClientHello; ``server_max`` caps the
    version the server accepts (so the ServerHello negotiates it).
    """
    def handshake(sni: str | None = "www.dpicore.test", alpn: list[str] | None = None,
                  server_max: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> tuple[bytes, bytes]:
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
        if alpn:
            cctx.set_alpn_protocols(alpn)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(*server_cert)
        sctx.maximum_version = server_max
        if alpn:
            sctx.set_alpn_protocols(alpn)
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = cctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=sni)
        server = sctx.wrap_bio(s_in, s_out, server_side=True)
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        hello = c_out.read()
        s_in.write(hello)
        with pytest.raises(ssl.SSLWantReadError):
            server.do_handshake()
        return hello, s_out.read()
    return handshake
