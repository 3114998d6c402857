#!/usr/bin/env bash
# Regenerates the tiny test model into a temporary directory and compares every file byte for
# byte with models/tiny-florence2 (or the directory given). Exit status 0: identical; 1: not.
#
#   models/tools/check_reproducible.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=$("$root/scripts/python-env.sh")
exec "$python" "$here/make_florence2.py" --preset tiny --check "${1:-$root/models/tiny-florence2}"
