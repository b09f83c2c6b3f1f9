#!/usr/bin/env bash
# Installs and starts the services some tests use; run as root (CI). Each test that
# needs one skips with a visible reason when it is absent.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]}; the tests that need them will skip"
fi

# PostgreSQL for the store and end-to-end tests: Debian's cluster on localhost, a role
# that may create databases (each test makes a fresh one), and the URL in
# test-artifacts/pg_url, which tests/run.sh exports as HARNESS_TEST_PG_URL. Idempotent.
pg_url_file="$(cd "$(dirname "$0")/.." && pwd)/test-artifacts/pg_url"
rm -f "$pg_url_file"
if command -v pg_lsclusters >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main" || pg_createcluster "$version" main >/dev/null
  pg_ctlcluster "$version" main status >/dev/null 2>&1 || pg_ctlcluster "$version" main start
  port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
  as_postgres() { runuser -u postgres -- "$@"; }
  if as_postgres pg_isready -q -p "$port"; then
    as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'harness_test'" | grep -q 1 \
      || as_postgres psql -p "$port" -qc "CREATE ROLE harness_test LOGIN CREATEDB PASSWORD 'harness_test'"
    as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'harness_test'" | grep -q 1 \
      || as_postgres createdb -p "$port" -O harness_test harness_test
    mkdir -p "$(dirname "$pg_url_file")"
    echo "postgresql://harness_test:harness_test@localhost:$port/harness_test" > "$pg_url_file"
  else
    echo "warning: PostgreSQL $version did not start; the PostgreSQL tests will skip"
  fi
fi
exit 0
