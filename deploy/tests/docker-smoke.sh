#!/usr/bin/env bash
# Builds an altimage image with the bundled tiny model baked in, runs it, and checks what the
# Dockerfiles promise: a non-root uid, every shared library resolved, /health/ready, a description
# made and read back with the bootstrap key, the HEALTHCHECK turning healthy, nothing but the data
# directory written inside the container (images stay in memory), and a clean drain on SIGTERM.
# Needs a Docker engine with BuildKit (Docker 23+, or DOCKER_BUILDKIT=1) and the base images.
#
#   deploy/tests/docker-smoke.sh cpu   # deploy/docker/Dockerfile.cpu
#   deploy/tests/docker-smoke.sh gpu   # deploy/docker/Dockerfile, served on the CPU through the
#                                      # onnxruntime-gpu library; ALTIMAGE_SMOKE_GPU=1 serves on
#                                      # cuda:0 with `--gpus all` instead (needs the NVIDIA runtime)
#
# DOCKER=/path/to/docker picks the client; KEEP=1 leaves the container for inspection.
set -euo pipefail
variant=${1:-cpu}
docker=${DOCKER:-docker}
root=$(cd "$(dirname "$0")/../.." && pwd)
case "$variant" in
  cpu) dockerfile=deploy/docker/Dockerfile.cpu ;;
  gpu) dockerfile=deploy/docker/Dockerfile ;;
  *) echo "usage: $0 cpu|gpu" >&2; exit 2 ;;
esac
image=altimage:smoke-$variant
name=altimage-smoke-$variant-$$
fail() { echo "FAIL: $*" >&2; "$docker" logs "$name" 2>&1 | tail -n 30 >&2 || true; exit 1; }
pass() { echo "ok: $*"; }
cleanup() { [ "${KEEP:-0}" = 1 ] || "$docker" rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

cd "$root"
DOCKER_BUILDKIT=1 "$docker" build -f "$dockerfile" --build-arg MODEL=models/tiny-florence2 -t "$image" .
pass "built $image from $dockerfile"

uid=$("$docker" run --rm --entrypoint id "$image" -u)
[ "$uid" = 10001 ] || fail "the image runs as uid $uid, not 10001"
pass "runs as uid 10001"

# The CUDA provider library needs the CUDA base image's libraries, so only the binary and the core
# ONNX Runtime library are held to "every dependency found" on both variants.
missing=$("$docker" run --rm --entrypoint sh "$image" -c \
  'ldd /usr/local/bin/altimage /opt/altimage/ort/libonnxruntime.so | grep "not found" || true')
[ -z "$missing" ] || fail "unresolved libraries: $missing"
pass "the binary and libonnxruntime.so resolve every library"

run_flags=(-d --name "$name" -p 127.0.0.1::8080)
if [ "$variant" = gpu ]; then
  if [ "${ALTIMAGE_SMOKE_GPU:-0}" = 1 ]; then
    run_flags+=(--gpus all -e ALTIMAGE_DEVICE=cuda:0)
  else
    # Without a GPU the image must refuse cuda, naming the flag, rather than fall back silently.
    refusal=$("$docker" run --rm "$image" serve 2>&1 || true)
    grep -q -- "--device" <<<"$refusal" || fail "the GPU image without a GPU did not name --device: $refusal"
    pass "the GPU image without a GPU refuses cuda and names --device"
    run_flags+=(-e ALTIMAGE_DEVICE=cpu)
  fi
fi
# Starts the container with `docker run` flags added to run_flags, waits for /health/ready and
# sets $base to its address.
start_ready() {
  "$docker" run "${run_flags[@]}" "$@" "$image" >/dev/null
  local port
  port=$("$docker" port "$name" 8080/tcp | head -n1 | sed 's/.*://')
  base=http://127.0.0.1:$port
  for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health/ready")" = 200 ] && return 0
    [ "$("$docker" inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the container exited"
    sleep 1
  done
  fail "not ready after 120 s"
}

# Posts a fixture image with the bootstrap key; prints the body, then the status on a last line.
describe() {
  local key
  key=$("$docker" exec "$name" cat /var/lib/altimage/bootstrap-api-key)
  curl -s -w '\n%{http_code}' -H "Authorization: Bearer $key" -H 'Content-Type: image/png' \
    --data-binary "@tests/conformance/fixtures/$1" "$base/v1/descriptions?asset_id=smoke"
}

start_ready
pass "/health/ready answers 200"

key=$("$docker" exec "$name" cat /var/lib/altimage/bootstrap-api-key)
created=$(describe scene-0.png)
[ "$(tail -n1 <<<"$created")" = 201 ] || fail "describe answered: $created"
id=$(head -n1 <<<"$created" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$base/v1/descriptions/$id")" = 200 ] \
  || fail "description $id could not be read back"
pass "a description made and read back ($id)"

# Docker's first health probe runs one --interval (30 s) after the start.
for _ in $(seq 1 90); do
  health=$("$docker" inspect -f '{{.State.Health.Status}}' "$name")
  [ "$health" = healthy ] && break
  sleep 1
done
[ "$health" = healthy ] || fail "HEALTHCHECK says $health"
pass "HEALTHCHECK healthy"

# Everything the server wrote sits in its data directory: the uploaded image is not on disk.
# ONNX Runtime's telemetry client writes /tmp/.ses (and a cache under $HOME, the data directory)
# even with telemetry disabled, as altimage does; it holds a timestamp and a session id.
written=$("$docker" diff "$name" | awk '{print $2}' \
  | grep -v -E '^(/var/lib/altimage(/.*)?|/var|/var/lib|/tmp|/tmp/\.ses)$' || true)
[ -z "$written" ] || fail "files written outside /var/lib/altimage: $written"
pass "nothing written outside /var/lib/altimage"

"$docker" stop -t 30 "$name" >/dev/null
code=$("$docker" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
"$docker" logs "$name" 2>&1 | grep -q 'SIGTERM received' || fail "no 'SIGTERM received' in the log"
"$docker" logs "$name" 2>&1 | grep -q '"stopped"' || fail "the server did not log that it stopped"
pass "SIGTERM drains and exits 0"
# As the Helm chart runs it: read-only root filesystem, writable /tmp and data directory only.
"$docker" rm -f "$name" >/dev/null
start_ready --read-only --tmpfs /tmp --tmpfs /var/lib/altimage:uid=10001,gid=10001
created=$(describe scene-1.png)
[ "$(tail -n1 <<<"$created")" = 201 ] || fail "read-only root: describe answered: $created"
pass "serves with a read-only root filesystem (the Helm chart's securityContext)"
echo "docker smoke ($variant): every check passed"
