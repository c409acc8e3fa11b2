#!/usr/bin/env bash
# Set up everything napari-softseg needs on a fresh Debian/Ubuntu machine, then stop.
# Idempotent: a second run only checks. Used by `make demo` and `make test` (and so by CI).
#   1. system libraries napari needs to draw (Xvfb, Mesa GL, Qt's xcb plugin libraries),
#      installed with apt-get when missing (as root, or through sudo);
#   2. a virtual environment in .venv with the package installed in editable mode, its test
#      extras, and torch pinned by constraints.txt (a CPU wheel here; see README for GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

# --- 1. system packages --------------------------------------------------------------------
apt_pkgs=(xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0
          libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
          libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3
          libfontconfig1 libxrender1 libxi6 libglib2.0-0)
# Debian/Ubuntu's system python3 creates virtual environments only with python3-venv
if ! "${PYTHON:-python3}" -c "import ensurepip, venv" >/dev/null 2>&1; then
  apt_pkgs+=(python3-venv)
fi
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    echo "bootstrap: error: need root or sudo to install: ${missing[*]}" >&2
    exit 2
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. Python environment -----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.softseg-installed"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing napari-softseg[test] into $VENV (a few minutes the first time)"
  # (some machines' pip configs list local indexes that do not exist; pip warns once per
  # package about them: drop that noise, keep everything else and pip's exit status)
  quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi
