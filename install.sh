#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian/Ubuntu machine: Python packages, and the
# offline data (Fashion-MNIST; WordNet 3.0, only to rebuild data/WordNetNouns.csv) and headless
# Chromium (the report's browser test) where apt exists.
# Under CI (CI set in the environment, e.g. CI=true; not empty, 0, false or no) the Debian packages
# are required: the tests that need them fail there (tests/conftest.py, needs), so a failed install
# stops here with an error instead of a note.
set -euo pipefail
cd "$(dirname "$0")"
ci=false
case "${CI:-}" in ""|0|[Ff][Aa][Ll][Ss][Ee]|[Nn][Oo]) ;; *) ci=true ;; esac
packages="dataset-fashion-mnist wordnet-base wordnet-sense-index chromium chromium-driver"
if ! dpkg -s $packages >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null && $sudo apt-get update -qq && $sudo apt-get install -y -qq $packages >/dev/null; then
    :
  elif [ "$ci" = true ]; then
    echo "error: could not install Debian's $packages (apt-get missing, or it failed: see above);" \
         "CI needs them so that every test runs" >&2
    exit 1
  else
    echo "note: could not install $packages; Fashion-MNIST will be downloaded by torchvision instead, the tests that need them skipped"
  fi
fi
python3 -m pip install -q -r requirements.txt
