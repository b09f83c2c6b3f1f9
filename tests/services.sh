#!/usr/bin/env bash
# Installs and starts the services some tests use; run as root (CI). Each test that
# needs one skips with a visible reason when it is absent.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ((${#need[@]})); then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]}; the tests that need them will skip"
fi
exit 0
