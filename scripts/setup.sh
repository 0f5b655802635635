#!/usr/bin/env bash
# The README's first command: install everything, then classify the bundled sample capture.
#
#   bash scripts/setup.sh
#
# samples/sample.pcap was recorded on loopback by scripts/make_captures.py (curl, dig, openssl,
# ssh, FTP, SMTP and Redis clients against local servers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh "$@"
echo
echo "$ .venv/bin/dpi classify --format table samples/sample.pcap"
.venv/bin/dpi classify --format table samples/sample.pcap
