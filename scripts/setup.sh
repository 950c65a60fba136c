#!/usr/bin/env bash
# Idempotent set-up: Debian's Chromium + driver, the .venv with pinned packages, styleforge itself.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first: the pinned CPU build; an unpinned resolve would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
