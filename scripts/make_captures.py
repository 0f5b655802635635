"""Make the project's real-client captures and the bundled sample, on loopback.

Each capture below runs real server programs (dnsmasq, OpenSSH sshd, openssl
s_server, redis-server, PostgreSQL, MariaDB, mosquitto, memcached, Dovecot,
telnetd, and Python's http.server, pyftpdlib, aiosmtpd, websockets where
Debian has no small daemon) and real clients (curl, dig, ssh, openssl
s_client, redis-cli, psql, mariadb, mosquitto_pub/sub, memccp/memccat,
telnet) on 127.0.0.1/::1, while tcpdump records the ports they use.  Several
run on non-standard ports and some on misleading ones (HTTP on 22, SSH on
80, TLS on 53 and 8080, DNS on a high port).

The expected label of every capture's payload-carrying flows is written to
tests/captures/realclients/expected.json from the table below, that is from
what this script ran, never from a classifier's output.

Usage (root: tcpdump needs capture rights, sshd and initdb need users)::

    bash scripts/install-capture-tools.sh        # the server and client programs
    .venv/bin/python scripts/make_captures.py    # all captures
    .venv/bin/python scripts/make_captures.py --only ssh_on_port80 --only sample
    .venv/bin/python scripts/make_captures.py --list

Re-runnable: servers are stopped and temporary files removed at the end of
each capture; files are replaced only when a capture succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

sys.path.insert(0, str(Path(__file__).resolve().parent))

import capture_servers as S  # noqa: E402
from capturelab import Lab, LabError, log, record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "captures" / "realclients"
EXPECTED = OUT / "expected.json"
SAMPLE = ROOT / "samples" / "sample.pcap"

FTP_PASSIVE = (30100, 30109)  # below the ephemeral range, so no unrelated flow matches the filter


@dataclass
class Expect:
    """The flows of one server endpoint: transport, server port (or range), protocol, how many."""

    transport: str
    port: int | tuple[int, int]
    protocol: str
    count: int
    client: str
    server: str

    def bpf(self) -> str:
        if isinstance(self.port, tuple):
            return f"({self.transport} portrange {self.port[0]}-{self.port[1]})"
        return f"({self.transport} port {self.port})"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"transport": self.transport}
        if isinstance(self.port, tuple):
            d["ports"] = list(self.port)
        else:
            d["port"] = self.port
        d.update(protocol=self.protocol, count=self.count, client=self.client, server=self.server)
        return d


Servers = Callable[[Lab, contextlib.ExitStack], None]
Clients = Callable[[Lab], None]


@dataclass
class Capture:
    name: str
    about: str
    servers: Servers
    clients: Clients
    expect: list[Expect]
    interface: str = "lo"
    linktype: str | None = None
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return self.path or OUT / f"{self.name}.pcap"

    def bpf(self) -> str:
        return " or ".join(e.bpf() for e in self.expect)


def _enter(*managers: Callable[[Lab], ContextManager]) -> Servers:
    def start(lab: Lab, stack: contextlib.ExitStack) -> None:
        for make in managers:
            stack.enter_context(make(lab))
    return start


def _seq(*steps: Callable[[Lab], None]) -> Clients:
    def go(lab: Lab) -> None:
        for step in steps:
            step(lab)
    return go


# --- building blocks: (server context, client step, expectations) ---------------------------------

def http_block(port: int, ipv6: bool = False) -> tuple[list, list, list[Expect]]:
    servers = [lambda lab: S.http_server(lab, port)]
    clients = [lambda lab: S.http_client(port)]
    count = 3
    if ipv6:
        servers.append(lambda lab: S.http_server(lab, port, "::1"))
        clients.append(lambda lab: S.http_client(port, "::1"))
        count = 6
    return servers, clients, [Expect("tcp", port, "HTTP", count, "curl 7.88 (GET, GET, POST)",
                                     "python3 -m http.server")]


def dns_block(port: int, tcp: bool = True) -> tuple[list, list, list[Expect]]:
    servers = [lambda lab: S.dns_server(lab, port)]
    clients = [lambda lab: S.dns_client(port)] + ([lambda lab: S.dns_client(port, tcp=True)] if tcp else [])
    expect = [Expect("udp", port, "DNS", 4, "dig 9.18 (A, AAAA, TXT, MX)", "dnsmasq")]
    if tcp:
        expect.append(Expect("tcp", port, "DNS", 4, "dig +tcp (A, AAAA, TXT, MX)", "dnsmasq"))
    return servers, clients, expect


def tls_block(port: int, sni: str, extra: tuple[str, ...] = (), what: str = "TLS 1.3") -> tuple[list, list, list]:
    return ([lambda lab: S.tls_server(lab, port)], [lambda lab: S.tls_client(port, sni, extra)],
            [Expect("tcp", port, "TLS", 1, f"openssl s_client ({what}, SNI {sni})", "openssl s_server -rev")])


def https_block(port: int, host: str) -> tuple[list, list, list]:
    return ([lambda lab: S.tls_server(lab, port, "-www")], [lambda lab: S.https_client(port, host)],
            [Expect("tcp", port, "TLS", 1, f"curl https (SNI {host})", "openssl s_server -www")])


def ssh_block(port: int) -> tuple[list, list, list]:
    return ([lambda lab: S.ssh_server(lab, port)], [lambda lab: S.ssh_client(lab, port)],
            [Expect("tcp", port, "SSH", 1, "OpenSSH ssh (ed25519 key auth, runs echo)", "OpenSSH sshd")])


def ftp_block(port: int) -> tuple[list, list, list]:
    return ([lambda lab: S.ftp_server(lab, port, FTP_PASSIVE)], [lambda lab: S.ftp_client(lab, port)],
            [Expect("tcp", port, "FTP", 3, "curl ftp:// (LIST via EPSV, RETR and STOR via PASV)", "pyftpdlib"),
             Expect("tcp", FTP_PASSIVE, "FTP_DATA", 3, "curl (passive data connections)", "pyftpdlib")])


def smtp_block(port: int) -> tuple[list, list, list]:
    return ([lambda lab: S.smtp_server(lab, port)], [lambda lab: S.smtp_client(lab, port)],
            [Expect("tcp", port, "SMTP", 1, "curl smtp:// (one message)", "aiosmtpd")])


def redis_block(port: int) -> tuple[list, list, list]:
    return ([lambda lab: S.redis_server(lab, port)], [lambda lab: S.redis_client(port)],
            [Expect("tcp", port, "Redis", 4, "redis-cli (PING, SET, GET, LPUSH)", "redis-server 7.0")])


def combine(*blocks: tuple[list, list, list]) -> tuple[Servers, Clients, list[Expect]]:
    servers = [s for b in blocks for s in b[0]]
    clients = [c for b in blocks for c in b[1]]
    expect = [e for b in blocks for e in b[2]]
    return _enter(*servers), _seq(*clients), expect


def single(name: str, about: str, *blocks: tuple[list, list, list], **kw: Any) -> Capture:
    servers, clients, expect = combine(*blocks)
    return Capture(name, about, servers, clients, expect, **kw)


def simple(name: str, about: str, server: Callable[[Lab], ContextManager], client: Callable[[Lab], None],
           expect: list[Expect]) -> Capture:
    return Capture(name, about, _enter(server), _seq(client), expect)


CAPTURES: list[Capture] = [
    single("http_nonstd_port", "curl against python http.server on 8000, over IPv4 and IPv6",
           http_block(8000, ipv6=True)),
    single("http_on_port22", "HTTP served on the SSH port (misleading port)", http_block(22)),
    single("dns_udp_tcp", "dig against dnsmasq on 53, over UDP and TCP", dns_block(53)),
    single("dns_high_port", "dig against dnsmasq on a high port (15353), over UDP and TCP", dns_block(15353)),
    single("tls_openssl", "openssl s_client against s_server on 4433 (TLS 1.3)",
           tls_block(4433, "tls.dpicore.test")),
    single("tls12_on_port8080", "TLS 1.2 on the HTTP-alternate port 8080 (misleading port)",
           tls_block(8080, "alt.dpicore.test", ("-tls1_2",), "TLS 1.2")),
    single("tls_on_port53", "TLS on TCP port 53, the DNS port (misleading port)",
           tls_block(53, "dns.dpicore.test")),
    single("https_curl_sni", "curl https with SNI www.dpicore.test against openssl s_server -www on 8443",
           https_block(8443, "www.dpicore.test")),
    single("ssh_keyauth", "ssh with key authentication against sshd on 2222", ssh_block(2222)),
    single("ssh_on_port80", "SSH served on the HTTP port (misleading port)", ssh_block(80)),
    single("ftp_pasv", "curl against pyftpdlib on 2121: LIST (EPSV), RETR and STOR (PASV)", ftp_block(2121)),
    single("smtp_curl", "curl sends one message to aiosmtpd on 2525", smtp_block(2525)),
    single("redis_cli", "redis-cli against redis-server on 6380", redis_block(6380)),
    simple("memcached_text", "memccp/memccat (text protocol) against memcached on 11212",
           lambda lab: S.memcached_server(lab, 11212), lambda lab: S.memcached_client(lab, 11212, False),
           [Expect("tcp", 11212, "Memcached", 2, "memccp, memccat (text protocol)", "memcached 1.6")]),
    simple("memcached_binary", "memccp/memccat --binary against memcached on 11213",
           lambda lab: S.memcached_server(lab, 11213), lambda lab: S.memcached_client(lab, 11213, True),
           [Expect("tcp", 11213, "Memcached", 2, "memccp, memccat --binary", "memcached 1.6")]),
    simple("mqtt_mosquitto", "mosquitto_sub and mosquitto_pub against mosquitto on 18830",
           lambda lab: S.mqtt_server(lab, 18830), lambda lab: S.mqtt_client(18830),
           [Expect("tcp", 18830, "MQTT", 2, "mosquitto_sub, mosquitto_pub (QoS 1)", "mosquitto 2.0")]),
    simple("postgresql_psql", "psql against PostgreSQL on 5433 (sslmode prefer: SSLRequest first; and disable)",
           lambda lab: S.postgres_server(lab, 5433), lambda lab: S.postgres_client(5433),
           [Expect("tcp", 5433, "PostgreSQL", 2, "psql 15", "postgres 15 (trust auth)")]),
    simple("mysql_mariadb", "mariadb client against MariaDB on 3307",
           lambda lab: S.mariadb_server(lab, 3307), lambda lab: S.mariadb_client(3307),
           [Expect("tcp", 3307, "MySQL", 1, "mariadb client 10.11", "mariadbd 10.11")]),
    simple("websocket_echo", "websockets client and echo server on 8765 (HTTP Upgrade, then frames)",
           lambda lab: S.websocket_server(lab, 8765), lambda lab: S.websocket_client(8765),
           [Expect("tcp", 8765, "WebSocket", 1, "python websockets client", "python websockets server")]),
    simple("telnet_2323", "telnet client against inetutils telnetd on 2323 (option negotiation, greeting)",
           lambda lab: S.telnet_server(lab, 2323), lambda lab: S.telnet_client(2323),
           [Expect("tcp", 2323, "Telnet", 1, "telnet (inetutils)", "inetutils telnetd via socat")]),
    simple("imap_pop3_dovecot", "curl imap:// and pop3:// against Dovecot on 1143 and 1110",
           lambda lab: S.dovecot_server(lab, 1143, 1110),
           lambda lab: (S.imap_client(1143), S.pop3_client(1110)),
           [Expect("tcp", 1143, "IMAP", 2, "curl imap:// (list, fetch)", "dovecot 2.3"),
            Expect("tcp", 1110, "POP3", 2, "curl pop3:// (list, retr)", "dovecot 2.3")]),
    single("any_sll2", "tcpdump -i any (Linux cooked v2 link type): HTTP, DNS and TLS",
           http_block(8001), dns_block(15354, tcp=False), tls_block(4434, "sll2.dpicore.test"),
           interface="any", linktype="LINUX_SLL2"),
    single("sample", "the README's sample: HTTP, DNS, TLS, HTTPS, SSH, FTP, SMTP, Redis",
           http_block(8000), dns_block(53), tls_block(4433, "tls.dpicore.test"),
           https_block(8443, "www.dpicore.test"), ssh_block(2222), ftp_block(2121), smtp_block(2525),
           redis_block(6380), path=SAMPLE),
]


def make(capture: Capture) -> None:
    log(f"{capture.name}: {capture.about}")
    with Lab() as lab, contextlib.ExitStack() as servers:
        capture.servers(lab, servers)
        with record(capture.file, capture.bpf(), capture.interface, capture.linktype):
            capture.clients(lab)


def expected_json() -> dict[str, Any]:
    """The labels, from the table above, for every capture file that exists."""
    out: dict[str, Any] = {}
    for c in CAPTURES:
        if not c.file.exists():
            continue
        out[c.name] = {
            "file": c.file.relative_to(ROOT).as_posix(),
            "about": c.about,
            "link_type": c.linktype or "EN10MB",
            "flows": [e.to_json() for e in c.expect],
        }
    return {
        "_comment": "Written by scripts/make_captures.py from what it ran (servers, clients, ports), not from a "
                    "classifier. Every flow that carries payload must match one entry (transport, server port) "
                    "and get its protocol; count is the number of such flows.",
        "captures": out,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", metavar="NAME", help="make only this capture (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the captures and exit")
    args = ap.parse_args(argv)
    if args.list:
        for c in CAPTURES:
            print(f"{c.name:22} {c.file.relative_to(ROOT)}  [{c.bpf()}]  {c.about}")
        return 0
    if os.geteuid() != 0:
        print("make_captures.py must run as root (tcpdump capture rights, sshd, initdb as postgres)",
              file=sys.stderr)
        return 2
    names = {c.name for c in CAPTURES}
    unknown = set(args.only or ()) - names
    if unknown:
        print(f"unknown capture(s): {', '.join(sorted(unknown))}; see --list", file=sys.stderr)
        return 2
    failed: list[str] = []
    for c in CAPTURES:
        if args.only and c.name not in args.only:
            continue
        try:
            make(c)
        except LabError as exc:
            log(f"FAILED {c.name}: {exc}")
            failed.append(c.name)
    EXPECTED.parent.mkdir(parents=True, exist_ok=True)
    EXPECTED.write_text(json.dumps(expected_json(), indent=2) + "\n")
    total = sum(c.file.stat().st_size for c in CAPTURES if c.file.exists())
    log(f"wrote {EXPECTED.relative_to(ROOT)}; captures total {total} bytes")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
