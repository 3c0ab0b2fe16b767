#!/usr/bin/env bash
# The quick start: a single-node jaco on this machine running examples/hello.
#
#   scripts/quickstart.sh [up]     start (or reuse) the daemon, init the cluster, build the
#                                  example image, apply examples/hello, say how to reach it
#   scripts/quickstart.sh status   the daemon, the cluster and the deployment
#   scripts/quickstart.sh down     delete the deployment, stop the daemon, remove every docker
#                                  object of the quick-start cluster and the directory
#
# Everything lives in one directory (default ./.jaco-quickstart at the top of the clone):
# daemon.yaml, the data directory, the control socket, daemon.log, daemon.pid, the cluster id and
# the bootstrap token (mode 0600). `up` is safe to repeat: it reuses a running quick-start daemon
# (restarting it if it no longer answers or its binary was rebuilt) and an initialised cluster.
#
# Needs: a running Docker engine this user may use, root (the daemon manages containers),
# Debian's busybox-static, and either a built jaco or cargo.
#
# Environment: JACO (the jaco binary; default target/release/jaco, built with
# `cargo build --release` if missing), JACO_QUICKSTART_DIR, JACO_QUICKSTART_API (the API's
# listen address, default 127.0.0.1:7000), JACO_QUICKSTART_METRICS (default 127.0.0.1:9100).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
qs_dir=$(realpath -m "${JACO_QUICKSTART_DIR:-$repo/.jaco-quickstart}")
api_listen=${JACO_QUICKSTART_API:-127.0.0.1:7000}
metrics_listen=${JACO_QUICKSTART_METRICS:-127.0.0.1:9100}
jaco=${JACO:-${CARGO_TARGET_DIR:-$repo/target}/release/jaco}

manifest=$repo/examples/hello/jaco.yaml
deployment=hello
image="jaco-example/busybox:1"
node_name=quickstart

config=$qs_dir/daemon.yaml
pid_file=$qs_dir/daemon.pid
log_file=$qs_dir/daemon.log
cluster_id_file=$qs_dir/cluster-id
nft_table=jaco_quickstart
# The CLI finds the daemon through JACO_SOCKET; no token is needed on the local socket.
export JACO_SOCKET=$qs_dir/jaco.sock
unset JACO_TOKEN JACO_CA_CERT

say() { printf '==> %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.2 s until it succeeds; fails after
# SECONDS naming WHAT.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf 'error: %s: not within %ss\n' "$what" "$seconds" >&2
      return 1
    fi
    sleep 0.2
  done
}

require_docker() {
  command -v docker >/dev/null || die "docker is not installed"
  docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "the Docker engine is not reachable (is dockerd running, may $(id -un) use it?)"
}

ensure_binary() {
  if [ -x "$jaco" ]; then
    return
  fi
  [ -z "${JACO:-}" ] || die "JACO=$JACO is not an executable"
  command -v cargo >/dev/null || die "no jaco binary at $jaco and no cargo to build it"
  say "building jaco (cargo build --release; a few minutes the first time)"
  (cd "$repo" && cargo build --release)
  [ -x "$jaco" ] || die "cargo build --release did not produce $jaco"
}


write_config() {
  mkdir -p "$qs_dir/data"
  chmod 0700 "$qs_dir" "$qs_dir/data"
  cat >"$config.new" <<EOF
# Written by scripts/quickstart.sh; rewritten on every \`up\`.
node_name: $node_name
data_dir: $qs_dir/data
api_listen: $api_listen
advertise: $api_listen
socket: $JACO_SOCKET
socket_group: null
metrics_listen: $metrics_listen
log: info
log_format: text
runtime:
  secrets_dir: $qs_dir/secrets
# Its own isolation table and mesh interface, so it never touches a real node's on this host.
network:
  nft_table: $nft_table
  wireguard_interface: jaco-qs
EOF
  mv "$config.new" "$config"
}

# The pid of the quick-start daemon if it runs (its command line names our daemon.yaml).
daemon_pid() {
  local pid
  [ -r "$pid_file" ] || return 1
  pid=$(cat "$pid_file")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "daemon --config $config" || return 1
  echo "$pid"
}

# A stopped or wedged daemon accepts connections but never answers: give it 5 s.
daemon_answers() { timeout 5 "$jaco" cluster status -o json >/dev/null 2>&1; }

# True when the running daemon executes an older build than $jaco (cargo replaced the file).
daemon_is_stale() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "$exe" != "$(readlink -f "$jaco")" ]
}

# stop_daemon [GRACE]: SIGTERM, then SIGKILL if it has not exited within GRACE seconds.
stop_daemon() {
  local grace=${1:-20} pid
  pid=$(daemon_pid) || {
    rm -f "$pid_file"
    return 0
  }
  say "stopping the daemon (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until "$grace" "exit" bash -c "! kill -0 $pid 2>/dev/null" 2>/dev/null; then
    echo "    it did not exit within ${grace}s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 5 "the daemon to exit after SIGKILL" bash -c "! kill -0 $pid 2>/dev/null"
  fi
  rm -f "$pid_file"
}

start_daemon() {
  local pid
  say "starting jaco daemon (log: $log_file)"
  setsid "$jaco" daemon --config "$config" </dev/null >>"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
  local deadline=$((SECONDS + 30))
  until daemon_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log_file" >&2
      rm -f "$pid_file"
      die "the daemon exited; the end of its log is above (if $api_listen or $metrics_listen is taken, set JACO_QUICKSTART_API / JACO_QUICKSTART_METRICS)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$log_file" >&2
      die "the daemon did not answer on $JACO_SOCKET within 30s"
    fi
    sleep 0.2
  done
}

ensure_daemon() {
  local pid
  if pid=$(daemon_pid); then
    if daemon_is_stale "$pid"; then
      say "the running daemon (pid $pid) is an older build: restarting it"
      stop_daemon
    elif daemon_answers; then
      say "reusing the running quick-start daemon (pid $pid)"
      return
    else
      say "the daemon (pid $pid) does not answer: restarting it"
      stop_daemon 3
    fi
  fi
  start_daemon
}

# A string field of the cluster status JSON (no JSON tool needed for these flat values).
status_field() {
  "$jaco" cluster status -o json | grep -o "\"$1\": *\"[^\"]*\"" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/'
}

has_leader() { [ -n "$(status_field leader)" ]; }

ensure_cluster() {
  if "$jaco" cluster status -o json | grep -q '"initialized": *true'; then
    say "the cluster is initialised already"
  else
    say "jaco cluster init"
    (umask 077 && "$jaco" cluster init --name quickstart -o json >"$qs_dir/bootstrap.json")
    echo "    the bootstrap operator token is in $qs_dir/bootstrap.json (mode 0600)"
  fi
  status_field cluster_id >"$cluster_id_file"
  wait_until 30 "the node to know a leader" has_leader
}

# Containers and networks of a deployment named hello that belong to another jaco cluster (for
# example a quick-start directory removed by hand without `down`) would collide with ours by
# name. Never touch them; say how to remove them.
refuse_foreign_objects() {
  local id foreign
  id=$(cat "$cluster_id_file")
  foreign=$({
    docker ps -a --filter "label=jaco.deployment=$deployment" --format '{{.Label "jaco.cluster_id"}} container {{.Names}}'
    docker network ls --filter "label=jaco.deployment=$deployment" --format '{{.Label "jaco.cluster_id"}} network {{.Name}}'
  } | awk -v id="$id" '$1 != id')
  [ -z "$foreign" ] && return
  echo "error: docker holds objects of deployment $deployment from another jaco cluster:" >&2
  awk '{print "    " $2 " " $3 " (cluster " $1 ")"}' <<<"$foreign" >&2
  echo "If they are left over from an earlier quick start, remove them with:" >&2
  awk '$2 == "container" {print "    docker rm -f " $3} $2 == "network" {print "    docker network rm " $3}' <<<"$foreign" >&2
  exit 1
}

# How to reach the app. Cluster-wide L4 routes for published ports come with the networking
# work; until then each replica is reached at its container address on this machine. Change
# only this function when that lands.
print_reach() {
  local page
  page=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 &&
    printf "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && cat <&3' 2>/dev/null || true)
  if [[ "$page" == *"served by"* ]]; then
    echo "Open http://127.0.0.1:8080/ (published port 8080; any node of the cluster serves it)."
    return
  fi
  local id addresses
  id=$(cat "$cluster_id_file")
  addresses=$(docker ps -q --filter "label=jaco.cluster_id=$id" \
    --filter "label=jaco.deployment=$deployment" --filter "label=jaco.service=web" |
    xargs -r docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}')
  if [ -z "${addresses// /}" ]; then
    echo "No running replica of $deployment/web was found: see \`jaco status $deployment\`."
    return
  fi
  echo "The route on port 8080 does not answer yet (see \`jaco status $deployment\`); each replica"
  echo "of web also answers at its container address on this machine:"
  local address
  for address in $addresses; do
    echo "    http://$address:8080/"
  done
}

print_usage_hints() {
  cat <<EOF

The CLI talks to this daemon through its socket:
    export JACO_SOCKET=$JACO_SOCKET
    $jaco status $deployment
    $jaco logs $deployment/poller
Stop and remove everything:
    $repo/scripts/quickstart.sh down
EOF
}

cmd_up() {
  require_docker
  ensure_binary
  [ "$(id -u)" -eq 0 ] || echo "warning: not root; the daemon may lack the rights it needs" >&2
  write_config
  ensure_daemon
  ensure_cluster
  refuse_foreign_objects
  say "building the example image $image"
  "$repo/scripts/build-example-image.sh" "$image"
  say "jaco apply examples/hello/jaco.yaml (waits until every replica runs)"
  if ! "$jaco" apply "$manifest"; then
    echo >&2
    echo "The apply failed. The daemon keeps running: see \`$jaco status $deployment\` with" >&2
    echo "JACO_SOCKET=$JACO_SOCKET, its log $log_file, and \`$0 down\` to remove everything." >&2
    exit 1
  fi
  "$jaco" status "$deployment"
  echo
  print_reach
  print_usage_hints
}

cmd_status() {
  local pid
  if ! pid=$(daemon_pid); then
    echo "the quick-start daemon is not running${qs_dir:+ (directory $qs_dir)}"
    return 1
  fi
  echo "daemon: pid $pid, socket $JACO_SOCKET, log $log_file"
  # Show as much as answers: one failing view does not hide the others.
  "$jaco" cluster status || true
  "$jaco" status "$deployment" || true
  echo
  print_reach
}

# Removes what docker still holds for the quick-start cluster: containers, networks and volumes
# labelled with its cluster id (never anything else).
remove_docker_objects() {
  local label="label=jaco.cluster_id=$1" containers networks volumes
  mapfile -t containers < <(docker ps -aq --filter "$label")
  mapfile -t networks < <(docker network ls -q --filter "$label")
  mapfile -t volumes < <(docker volume ls -q --filter "$label")
  [ "${#containers[@]}" -eq 0 ] || docker rm -f "${containers[@]}" >/dev/null
  [ "${#networks[@]}" -eq 0 ] || docker network rm "${networks[@]}" >/dev/null
  [ "${#volumes[@]}" -eq 0 ] || docker volume rm "${volumes[@]}" >/dev/null
  echo "    removed ${#containers[@]} containers, ${#networks[@]} networks, ${#volumes[@]} volumes"
}

no_containers_left() { [ -z "$(docker ps -aq --filter "label=jaco.cluster_id=$1")" ]; }

cmd_down() {
  if [ ! -d "$qs_dir" ]; then
    say "nothing to stop: $qs_dir does not exist"
    return
  fi
  local id=""
  [ -r "$cluster_id_file" ] && id=$(cat "$cluster_id_file")
  if daemon_pid >/dev/null && daemon_answers && [ -n "$id" ]; then
    say "jaco delete --yes $deployment"
    local output
    if output=$("$jaco" delete --yes "$deployment" 2>&1); then
      echo "$output"
      wait_until 60 "the daemon to remove the containers of $deployment" no_containers_left "$id" ||
        echo "    removing the rest directly"
    elif [[ "$output" == *deployment_not_found* ]]; then
      echo "    no deployment $deployment"
    else
      echo "$output" >&2
      echo "    removing its containers directly"
    fi
  fi
  stop_daemon
  # The table outlives the daemon on purpose (containers stay isolated while it restarts);
  # the quick start is over, so it goes too.
  if command -v nft >/dev/null && nft list table inet "$nft_table" >/dev/null 2>&1; then
    say "removing the nftables table inet $nft_table"
    nft delete table inet "$nft_table" || true
  fi
  if [ -n "$id" ]; then
    require_docker
    say "removing docker objects of cluster $id"
    remove_docker_objects "$id"
  fi
  say "removing $qs_dir"
  rm -rf "$qs_dir"
  echo "The image $image stays; remove it with: docker rmi $image"
}

case "${1:-up}" in
  up) cmd_up ;;
  status) cmd_status ;;
  down) cmd_down ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 [up|status|down]" ;;
esac
