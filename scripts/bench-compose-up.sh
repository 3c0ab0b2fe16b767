#!/usr/bin/env bash
# The peer side of the deploy benchmark (docs/benchmarks.md): how long plain docker-compose takes
# from `up -d` until every replica of a compose file is healthy, on this machine's engine.
#
# Usage: scripts/bench-compose-up.sh [--runs N] [--replicas N] [--compose FILE]
#   defaults: 5 runs, 10 replicas, benches/web10/compose.yaml (one service, deploy.replicas: 10,
#   1 s-interval healthcheck, the locally built example image).
#
# docker-compose v1 (1.29) has no `--wait`, so it is emulated: the clock starts before
# `docker-compose up -d`, which returns once every container is created and started, and stops
# when `docker inspect` (polled every 100 ms) reports all of them healthy. Each run starts from
# nothing: `down -v` removes the containers, network and volumes before and after it. A run
# that is not healthy within 120 s fails the script.
#
# Output: one `compose_up_wait_ms <ms> up_returned_ms <ms>` line per run (benches parse these;
# they can call this with --runs 1 between their own runs to interleave), then a summary line
# with the median.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=5
replicas=10
compose_file=$repo/benches/web10/compose.yaml
deadline_s=120

while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --compose) compose_file=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--replicas N] [--compose FILE]" >&2; exit 2 ;;
  esac
done

command -v docker-compose >/dev/null || {
  echo "error: docker-compose is not installed (apt-get install docker-compose)" >&2
  exit 1
}

project="jacobench$$"
compose=(docker-compose --project-name "$project" --file "$compose_file")

teardown() { "${compose[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true; }
trap teardown EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

"$repo/scripts/build-example-image.sh" >/dev/null

samples=()
for run in $(seq 1 "$runs"); do
  teardown
  started=$(now_ms)
  "${compose[@]}" up -d >/dev/null 2>&1
  up_returned=$(($(now_ms) - started))
  mapfile -t ids < <(docker ps -q --filter "label=com.docker.compose.project=$project")
  if [ "${#ids[@]}" -ne "$replicas" ]; then
    echo "error: run $run: $project has ${#ids[@]} containers, expected $replicas" >&2
    exit 1
  fi
  while true; do
    healthy=$(docker inspect --format '{{.State.Health.Status}}' "${ids[@]}" | grep -c '^healthy$' || true)
    [ "$healthy" -eq "$replicas" ] && break
    if [ $(($(now_ms) - started)) -gt $((deadline_s * 1000)) ]; then
      echo "error: run $run: $healthy of $replicas healthy after ${deadline_s}s" >&2
      exit 1
    fi
    sleep 0.1
  done
  elapsed=$(($(now_ms) - started))
  samples+=("$elapsed")
  echo "compose_up_wait_ms $elapsed up_returned_ms $up_returned"
done
teardown

mapfile -t sorted < <(printf '%s\n' "${samples[@]}" | sort -n)
echo "docker-compose up -d + wait healthy, $replicas replicas: median ${sorted[$((runs / 2))]} ms over $runs runs (min ${sorted[0]}, max ${sorted[$((runs - 1))]})"
