"""A honeypot decides from a connection's first bytes what the client speaks.

Client-first protocols answer from the client's first payload; for
server-first protocols (SSH, FTP, SMTP, …) the server's greeting is enough.
"""

from dpicore import Classifier

FIRST_PAYLOADS = [
    ("tcp", b"GET /admin HTTP/1.1\r\nHost: 198.51.100.1\r\nUser-Agent: masscan\r\n\r\n", False),
    ("tcp", b"SSH-2.0-libssh_0.9.6\r\n", False),
    ("udp", bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001"), False),
    ("tcp", b"220 mail.example.org ESMTP Postfix\r\n", True),
    ("tcp", b"\x00\x01\x02 definitely not a protocol", False),
]

with Classifier() as dpi:
    for transport, payload, from_server in FIRST_PAYLOADS:
        verdict = dpi.classify_payload(payload, transport=transport, from_server=from_server)
        print(f"{transport} {payload[:24]!r:<32} -> {verdict.protocol} ({verdict.confidence:.2f})"
              f" {verdict.metadata}")
