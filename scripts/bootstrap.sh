#!/usr/bin/env bash
# Prepare this machine for voxloop: Debian packages, a .venv, and the package itself.
# Safe to run again: each step is skipped when already done, so a set-up machine takes ~1 s.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the browser client's tests drive it headless (tests/realtime/test_browser.py);
# python3-venv: Debian's python3 makes no venv without it; build-essential, python3-dev:
# pesq (the codec eval's PESQ) is published as source only and is compiled on install
APT_PACKAGES=(espeak-ng sox flite festival festvox-us-slt-hts festvox-kallpc16k
              libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins libsndfile1
              chromium python3-venv python3-dev build-essential)
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.voxloop-installed

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: need root to install ${missing[*]}: run as root or install them with apt-get" >&2; exit 1; }
    SUDO=sudo
  fi
  command -v apt-get >/dev/null || { echo "bootstrap: no apt-get here; install these packages by hand: ${missing[*]}" >&2; exit 1; }
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/pip" ]; then  # (a venv that failed half way has python, no pip)
  echo "bootstrap: creating $VENV with $($PYTHON --version)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || { rm -rf "$VENV"; echo "bootstrap: $PYTHON -m venv failed;" \
    "on Debian install python3-venv (apt-get install python3-venv) and run again" >&2; exit 1; }
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  # torch 2.14.1 for x86_64 is a CUDA build: the finished .venv takes about 6.5 GB.
  need_kb=$((7 * 1024 * 1024))
  free_kb=$(df -Pk "$VENV" | awk 'NR == 2 {print $4}')
  if [ "$free_kb" -lt "$need_kb" ]; then
    echo "bootstrap: $((free_kb / 1024)) MB free under $(df -P "$VENV" | awk 'NR == 2 {print $6}'), the .venv needs about 7 GB;" \
         "free some space (old clones, /tmp) and run again" >&2
    exit 1
  fi
  echo "bootstrap: installing voxloop and its dependencies into $VENV (torch comes from local disk)"
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel
  "$VENV/bin/pip" install -q "torch==2.14.1" "torchaudio==2.11.0"
  "$VENV/bin/pip" install -q -e ".[dev]"
  touch "$STAMP"
fi
