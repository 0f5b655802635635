#!/usr/bin/env bash
# Install everything dpicore and its tests need; safe to run again (it only does what is missing).
#
#   bash scripts/install.sh [--quiet]
#
# 1. System packages (scripts/system-packages.txt plus plugins/*/system-packages.txt): installed with
#    apt-get when running as root ('apt-get update' only when a package has no install candidate yet);
#    otherwise the missing ones are listed with the command to run, and the install goes on.
# 2. .venv (python3 -m venv, Python >= 3.11) with dpicore and every plugin under plugins/ that has a
#    pyproject.toml installed editable with all its optional extras, plus
#    scripts/requirements-test.txt and scripts/requirements-build.txt.  Skipped when nothing changed
#    since the last successful install (a stamp in .venv holds a hash of those files).
# 3. The hot modules compiled with Cython (scripts/compile_core.py), when a C compiler is there.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
QUIET=0
[[ "${1:-}" == "--quiet" || "${1:-}" == "-q" ]] && QUIET=1
say() { [[ $QUIET == 1 ]] || echo "install: $*"; }
warn() { echo "install: $*" >&2; }

# --- 1. system packages -------------------------------------------------------------------------------
package_lists=(scripts/system-packages.txt)
for f in plugins/*/system-packages.txt; do [[ -f "$f" ]] && package_lists+=("$f"); done
mapfile -t packages < <(sed -e 's/#.*//' "${package_lists[@]}" | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)

if ! command -v dpkg-query >/dev/null 2>&1; then
  warn "not a Debian system: install the equivalents of these yourself: ${packages[*]}"
else
  missing=()
  for p in "${packages[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]]; then
      export DEBIAN_FRONTEND=noninteractive
      for p in "${missing[@]}"; do
        if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]'; then
          say "apt-get update (no install candidate for $p yet)"
          apt-get update -q >/dev/null
          break
        fi
      done
      say "apt-get install ${missing[*]}"
      apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    else
      warn "missing system packages (not root, so not installing them): ${missing[*]}"
      warn "  install them with:  sudo apt-get install -y ${missing[*]}"
      warn "  continuing: what needs them (the nDPI layer, live-capture tests) will say so or skip"
    fi
  else
    say "system packages present"
  fi
fi

# --- 2. Python environment ----------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  warn "dpicore needs Python >= 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing). Set PYTHON=..."
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv || { warn "python3 -m venv failed (Debian: apt-get install python3-venv)"; exit 1; }
fi

# Each distribution with all its extras (e.g. dpicore[report], dpi-ml[train]): "everything" means the
# report and training tools too, and their tests must not skip for a missing package.
with_extras() {
  .venv/bin/python - "$1/pyproject.toml" <<'PY'
import sys, tomllib
extras = sorted(tomllib.load(open(sys.argv[1], "rb")).get("project", {}).get("optional-dependencies", {}))
print(f"[{','.join(extras)}]" if extras else "")
PY
}
specs=(-e ".$(with_extras .)")
for pp in plugins/*/pyproject.toml; do
  [[ -f "$pp" ]] || continue
  dir=$(dirname "$pp")
  specs+=(-e "$dir$(with_extras "$dir")")
done

stamp=.venv/.dpicore-install-stamp
digest=$(cat pyproject.toml plugins/*/pyproject.toml scripts/requirements-*.txt 2>/dev/null \
         | { cat; printf '%s\n' "${specs[@]}"; } | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$digest" && -x .venv/bin/dpi ]]; then
  say "Python packages up to date (.venv)"
else
  say "pip install ${specs[*]} -r scripts/requirements-test.txt -r scripts/requirements-build.txt"
  pip_quiet=(-q)
  [[ $QUIET == 1 ]] && pip_quiet=(-q -q)
  .venv/bin/python -m pip install "${pip_quiet[@]}" --disable-pip-version-check "${specs[@]}" \
    -r scripts/requirements-test.txt -r scripts/requirements-build.txt
  echo "$digest" > "$stamp"
fi
# Bytecode for our own (editable) packages, as pip writes it for an installed wheel: without it a
# machine that sets PYTHONDONTWRITEBYTECODE compiles ~80 modules on every `dpi` start (0.2 s).
# Stale files are recompiled by Python itself when a source changes.
.venv/bin/python -m compileall -q -j 0 dpicore plugins/*/dpi_* > /dev/null

# --- 3. compiled hot modules --------------------------------------------------------------------------
# The modules scripts/compile.txt and plugins/*/compile.txt list, compiled with Cython as they are into
# .venv/dpicore-compiled (what changed since the last build only; dpicore/compiled.py).  Without a C
# compiler and Python's headers (gcc, python3-dev) they run from source, slower; DPI_COMPILE=0 skips it.
if [[ "${DPI_COMPILE:-1}" != 0 ]]; then
  compile_args=()
  [[ $QUIET == 1 ]] && compile_args=(--quiet)
  .venv/bin/python scripts/compile_core.py "${compile_args[@]}" \
    || warn "continuing: the modules not compiled run from source"
fi
say "ready: $(.venv/bin/dpi --version)"
