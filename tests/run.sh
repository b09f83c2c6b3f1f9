#!/usr/bin/env bash
# The README's test command: create the environment, install, start what the tests
# need (as root: Debian's Chromium and a PostgreSQL server), run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev]'

if [ "$(id -u)" = 0 ]; then
  bash tests/services.sh
else
  echo "not root: browser and PostgreSQL tests will skip (they need Debian's chromium and postgresql)"
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The PostgreSQL that services.sh started: store and end-to-end tests run against it too.
if [ -z "${HARNESS_TEST_PG_URL:-}" ] && [ -f test-artifacts/pg_url ]; then
  export HARNESS_TEST_PG_URL="$(cat test-artifacts/pg_url)"
fi
exec .venv/bin/python -m pytest -q "$@"
