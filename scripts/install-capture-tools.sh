#!/usr/bin/env bash
# Install the real server and client programs scripts/make_captures.py runs (root, Debian).
# Only needed to regenerate the captures; the test suite uses the committed files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ $(id -u) != 0 ]]; then
  echo "install-capture-tools.sh must run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# policy-rc.d-less machines would start these daemons on install; make_captures.py runs its own copies.
apt-get install -y -q --no-install-recommends \
  tcpdump curl dnsutils dnsmasq-base openssl socat \
  openssh-server openssh-client redis-server redis-tools memcached libmemcached-tools \
  mosquitto mosquitto-clients postgresql postgresql-client mariadb-server mariadb-client \
  dovecot-imapd dovecot-pop3d inetutils-telnetd telnet >/dev/null
bash scripts/install.sh
.venv/bin/python -m pip install -q -r scripts/requirements-captures.txt
echo "capture tools installed; now: .venv/bin/python scripts/make_captures.py"
