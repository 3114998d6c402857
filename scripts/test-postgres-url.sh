#!/usr/bin/env bash
# Prints the PostgreSQL URL the tests use: $TEST_POSTGRES_URL when set, else the local server at
# 127.0.0.1:5432 when one answers (trust auth), else nothing (the tests then run on SQLite only).
# In CI a missing PostgreSQL is an error: the PostgreSQL half of the tests must not vanish quietly.
set -euo pipefail
if [ -n "${TEST_POSTGRES_URL:-}" ]; then
  echo "$TEST_POSTGRES_URL"
  exit 0
fi
url="postgres://postgres@127.0.0.1:5432/test"
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "$url"
elif [ "${CI:-}" = "true" ]; then
  echo "CI: no PostgreSQL answers at 127.0.0.1:5432; .ci/run starts it, set TEST_POSTGRES_URL otherwise" >&2
  exit 1
else
  echo "note: no PostgreSQL at 127.0.0.1:5432; database tests run on SQLite only" >&2
fi
