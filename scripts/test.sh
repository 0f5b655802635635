#!/usr/bin/env bash
# The README's second command (and CI's, through .ci/run): install what is missing, run every test.
#
#   bash scripts/test.sh [pytest arguments]
#
# Runs pytest from the repository root (testpaths: tests and plugins).  Exits non-zero when any
# test fails, and also when pytest collected nothing (its exit code 5), which means a broken setup.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh --quiet || { echo "test.sh: scripts/install.sh failed" >&2; exit 1; }
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc == 5 ]]; then
  echo "test.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit $rc
