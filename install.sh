#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian/Ubuntu machine: Python packages, and the
# offline data (Fashion-MNIST; WordNet 3.0, only to rebuild data/WordNetNouns.csv) and headless
# Chromium (the report's browser test) where apt exists.
set -euo pipefail
cd "$(dirname "$0")"
packages="dataset-fashion-mnist wordnet-base wordnet-sense-index chromium chromium-driver"
if command -v apt-get >/dev/null && ! dpkg -s $packages >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq $packages >/dev/null \
    || echo "note: could not install $packages; Fashion-MNIST will be downloaded by torchvision instead, the browser test skipped"
fi
python3 -m pip install -q -r requirements.txt
