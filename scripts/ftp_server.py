"""A pyftpdlib FTP server for scripts/make_captures.py: one user, loopback, a fixed passive port range.

The passive range is fixed (and below the kernel's ephemeral range) so the
capture filter can include the data connections and the expected labels can
name their ports.
"""

from __future__ import annotations

import argparse

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--passive", required=True, help="LOW-HIGH")
    args = ap.parse_args()
    low, high = (int(x) for x in args.passive.split("-"))
    auth = DummyAuthorizer()
    auth.add_user("dpi", "capture", args.root, perm="elradfmw")
    handler = FTPHandler
    handler.authorizer = auth
    handler.passive_ports = range(low, high + 1)
    handler.banner = "dpicore capture FTP server ready."
    server = FTPServer(("127.0.0.1", args.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
