#!/usr/bin/env bash
# The Debian packages the suite uses: chromium (browser tests) and R's lme4 (the lme4 parity test).
# Installs what is missing when it can (root, or passwordless sudo); otherwise says in one line how,
# and that those tests will skip. Never fails the run: the suite skips what it cannot reach.
set -uo pipefail

missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
Rscript -e 'library(lme4)' >/dev/null 2>&1 || missing="$missing r-cran-lme4"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
else
  echo "system packages missing:$missing; install them with 'sudo apt-get install$missing' (until then their tests skip)"
  exit 0
fi
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq $missing >/dev/null; }; then
  echo "could not install$missing (apt-get failed); their tests will skip"
fi
exit 0
