"""Record the first payload real client programs send, for the batch C tests (writes batch_c_clients.json).

Each client is pointed at a listener on 127.0.0.1 that only records what
arrives (and, for TCP, what arrives first on the connection); nothing
answers, so the client's opening message is all there is and the client is
stopped after a short timeout.  Nothing leaves the loopback interface.

Programs (Debian 12 packages unless noted): dig (bind9-dnsutils), nmblookup
and smbclient (samba-common-bin, smbclient), snmpget (snmp), tftp
(tftp-hpa), rpcinfo (rpcbind), logger (bsdutils), and impacket's example
tools rdp_check.py and rpcdump.py (PyPI ``impacket``, run from the venv
given with ``--impacket``).  Ports below 1024 (137, 139, 135) need root.

Run: ``python make_batch_c_clients.py --impacket /path/to/venv/bin``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

OUT = Path(__file__).with_name("batch_c_clients.json")
LOOPBACK = "127.0.0.1"


def _listen(transport: str, port: int) -> tuple[socket.socket, list[bytes]]:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    got: list[bytes] = []

    def serve() -> None:
        try:
            if transport == "udp":
                got.append(sock.recvfrom(65535)[0])
                return
            sock.listen(1)
            conn, _ = sock.accept()
            conn.settimeout(3)
            data = conn.recv(65535)
            got.append(data)
            conn.close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return sock, got


def record(transport: str, port: int, argv: list[str], timeout: float = 4.0) -> bytes | None:
    sock, got = _listen(transport, port)
    try:  # in a scratch directory: clients such as tftp create the file they were asked to fetch
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=timeout, cwd=scratch)
    except subprocess.TimeoutExpired:
        pass
    finally:
        sock.close()
    return got[0] if got else None


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0][:80] if (out.stdout or out.stderr).strip() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impacket", help="bin directory of a venv with impacket installed")
    args = parser.parse_args()
    imp = Path(args.impacket) if args.impacket else None
    P = 40123  # an arbitrary unprivileged port for clients that accept one
    cases = [
        ("DNS", "udp", P, ["dig", "@127.0.0.1", "-p", str(P), "example.com", "A", "+tries=1", "+time=1"],
         ["dig", "-v"]),
        ("DNS", "tcp", P, ["dig", "@127.0.0.1", "-p", str(P), "example.com", "MX", "+tcp", "+tries=1", "+time=1"],
         ["dig", "-v"]),
        ("NetBIOS", "udp", 137, ["nmblookup", "-U", "127.0.0.1", "--recursion", "WORKGROUP"], ["nmblookup", "-V"]),
        ("NetBIOS", "tcp", 139, ["smbclient", "-L", "//127.0.0.1", "-p", "139", "-N", "-t", "2"],
         ["smbclient", "-V"]),
        ("SMB", "tcp", P, ["smbclient", "-L", "//127.0.0.1", "-p", str(P), "-N", "-t", "2"], ["smbclient", "-V"]),
        ("SMB", "tcp", P, ["smbclient", "-L", "//127.0.0.1", "-p", str(P), "-N", "-t", "2",
                           "--option=client min protocol=NT1"], ["smbclient", "-V"]),
        ("SNMP", "udp", P, ["snmpget", "-v1", "-c", "public", "-t", "1", "-r", "0", f"127.0.0.1:{P}",
                            "1.3.6.1.2.1.1.1.0"], ["snmpget", "--version"]),
        ("SNMP", "udp", P, ["snmpget", "-v2c", "-c", "private", "-t", "1", "-r", "0", f"127.0.0.1:{P}",
                            "1.3.6.1.2.1.1.5.0"], ["snmpget", "--version"]),
        ("SNMP", "udp", P, ["snmpget", "-v3", "-l", "noAuthNoPriv", "-u", "monitor", "-t", "1", "-r", "0",
                            f"127.0.0.1:{P}", "1.3.6.1.2.1.1.1.0"], ["snmpget", "--version"]),
        ("TFTP", "udp", P, ["tftp", "127.0.0.1", str(P), "-m", "binary", "-c", "get", "pxelinux.0"],
         ["dpkg-query", "-W", "-f=${Package} ${Version}", "tftp-hpa"]),
        # rpcinfo asks rpcbind (port 111) for the program's address first: a GETADDR call.
        ("NFS", "udp", 111, ["rpcinfo", "-u", "127.0.0.1", "100003", "3"],
         ["dpkg-query", "-W", "-f=${Package} ${Version}", "rpcbind"]),
        ("NFS", "tcp", 111, ["rpcinfo", "-p", "127.0.0.1"], ["dpkg-query", "-W", "-f=${Package} ${Version}", "rpcbind"]),
        ("Syslog", "udp", P, ["logger", "--udp", "-n", "127.0.0.1", "-P", str(P), "--rfc5424", "-t", "dpicore",
                              "test message"], ["logger", "-V"]),
        ("Syslog", "udp", P, ["logger", "--udp", "-n", "127.0.0.1", "-P", str(P), "--rfc3164", "-t", "dpicore",
                              "test message"], ["logger", "-V"]),
        ("Syslog", "tcp", P, ["logger", "--tcp", "-n", "127.0.0.1", "-P", str(P), "--octet-count", "-t", "dpicore",
                              "test message"], ["logger", "-V"]),
    ]
    if imp is not None:
        py = str(imp / "python")
        VERSION = "import importlib.metadata as m; print('impacket', m.version('impacket'))"
        cases += [
            ("RDP", "tcp", 3389, [py, str(imp / "rdp_check.py"), "user:pass@127.0.0.1"], [py, "-c", VERSION]),
            ("DCERPC", "tcp", 135, [py, str(imp / "rpcdump.py"), "-port", "135", "127.0.0.1"], [py, "-c", VERSION]),
        ]
    samples = []
    for i, (protocol, transport, port, argv, vargv) in enumerate(cases):
        if port == P:  # a fresh port per client: a listener nobody connected to may still hold the last one
            argv = [a.replace(str(P), str(P + i)) for a in argv]
            port = P + i
        if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
            print(f"skip {protocol}: {argv[0]} not installed")
            continue
        data = record(transport, port, argv)
        if not data:
            print(f"no payload from {' '.join(argv)}")
            continue
        cmd = " ".join(Path(a).name if a.startswith("/") else a for a in argv)
        samples.append({"protocol": protocol, "transport": transport, "program": version(vargv), "command": cmd,
                        "hex": data.hex()})
        print(f"{protocol:8} {transport} {len(data):5} bytes  {cmd}")
    OUT.write_text(json.dumps({"generated_by": Path(__file__).name, "samples": samples}, indent=1) + "\n")


if __name__ == "__main__":
    main()
