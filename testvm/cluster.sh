#!/usr/bin/env bash
# The container tier of the multi-node test harness (SPEC §9.6 (a)): an N-node jaco cluster on
# one machine where every node is a container with its own network stack, its own dockerd
# (storage on a docker volume) and its own `jaco daemon`, on a private docker network, pulling
# workload images from a local registry. See testvm/README.md.
#
# This script only drives docker, debootstrap, docker-registry and the jaco CLI inside the
# nodes; it never changes the host engine's configuration and touches no docker object it did
# not label with its cluster name.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: testvm/cluster.sh COMMAND [ARGS]

  image                      build the node image unless an identical one exists (cached by
                             a hash of the package list and the build recipe)
  up NAME N                  start cluster NAME with N nodes (n0…n{N-1}), form it and wait
                             until every node is a ready member; idempotent, and on a
                             running cluster with fewer nodes it adds (joins) the missing ones
  down NAME                  remove everything of cluster NAME: nodes, their volumes, the
                             network, the registry and the state directory; idempotent
  kill NAME I                SIGKILL node I's container (its volumes survive)
  start NAME I               start node I's container again and wait for dockerd and jaco
  partition NAME I           cut node I off from the other nodes (nftables in its netns);
                             docker exec and the registry keep working
  heal NAME I                undo partition
  jaco NAME I ARGS...        run the jaco CLI inside node I against its local socket
  exec NAME I CMD...         run a command inside node I (e.g. docker ps)
  push NAME IMAGE [REPO]     push a host image to the cluster's registry; prints the
                             reference the nodes pull (REPO defaults to IMAGE)
  registry NAME              print the registry address the nodes use (host:port)
  info NAME                  print the cluster's nodes, network, registry and state dir

Environment:
  JACO_BIN             the jaco binary bind-mounted read-only into every node (required by
                       up and start; default: target/debug/jaco of this repository)
  JACO_HARNESS_STATE   state directory root (default ${TMPDIR:-/tmp}/jaco-harness)
  JACO_HARNESS_MIRROR  Debian mirror for the image (default http://deb.debian.org/debian)
  JACO_HARNESS_WAIT    seconds to wait for any condition (default 120)
  JACO_HARNESS_DAEMON_YAML
                       extra text appended to every new node's /etc/jaco/daemon.yaml (up),
                       e.g. 'scheduler: {node_lost_after_ms: 4000}'; remembered in the state
                       directory, so nodes added by a later `up` get it too; @GATEWAY@ in
                       it stands for the cluster network's gateway (the host)
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
state_root=${JACO_HARNESS_STATE:-${TMPDIR:-/tmp}/jaco-harness}
mirror=${JACO_HARNESS_MIRROR:-http://deb.debian.org/debian}
wait_seconds=${JACO_HARNESS_WAIT:-120}

# The node image: Debian bookworm, minbase, plus what a node needs. Changing this list or
# build_rootfs changes the image tag, so the next `image` builds a new one.
SUITE=bookworm
PACKAGES=(docker.io containerd runc tini iptables nftables iproute2 ca-certificates procps
  util-linux)
IMAGE_REPO=jaco-harness/node
LABEL=jaco.harness.cluster
PARTITION_TABLE=jaco_harness_partition

die() {
  echo "cluster.sh: error: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null || die "$1 is not installed${2:+ ($2)}"
}

check_name() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9_.-]{0,40}$ ]] ||
    die "cluster name '$1' must be 1-41 characters of a-z 0-9 _ . - (it prefixes docker objects)"
}

check_index() {
  [[ "$2" =~ ^[0-9]+$ ]] || die "node index '$2' is not a number"
  docker container inspect "$(node_container "$1" "$2")" >/dev/null 2>&1 ||
    die "cluster $1 has no node $2"
}

node_container() { echo "$1-n$2"; }
state_dir() { echo "$state_root/$1"; }

# ---------------------------------------------------------------------------------------------
# image

# Writes a bookworm root file system with PACKAGES into directory $1.
build_rootfs() {
  local root=$1
  local include
  include=$(IFS=,; echo "${PACKAGES[*]}")
  debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$mirror"
  # Nothing at run time needs apt's caches, documentation or translations.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
  # The host's engine programs netfilter through nf_tables; the node's must use the same
  # backend (the default alternative on bookworm, pinned here).
  chroot "$root" update-alternatives --set iptables /usr/sbin/iptables-nft >/dev/null
  chroot "$root" update-alternatives --set ip6tables /usr/sbin/ip6tables-nft >/dev/null
}

image_tag() {
  local hash
  hash=$( {
    echo "$SUITE"
    echo "${PACKAGES[*]}"
    declare -f build_rootfs
  } | sha256sum | cut -c1-16)
  echo "$IMAGE_REPO:$hash"
}

cmd_image() {
  need docker "apt-get install docker.io"
  local tag
  tag=$(image_tag)
  # One build at a time on this machine: parallel tests ask for the image too.
  exec 8>"${TMPDIR:-/tmp}/jaco-harness-image.lock"
  flock 8
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exec 8>&-
    return
  fi
  need debootstrap "apt-get install debootstrap"
  [ "$(id -u)" -eq 0 ] || die "building the node image needs root (debootstrap)"
  local root log started
  root=$(mktemp -d "${TMPDIR:-/tmp}/jaco-harness-rootfs.XXXXXX")
  log=$root.log
  started=$SECONDS
  echo "building $tag (debootstrap $SUITE from $mirror; log $log)" >&2
  # shellcheck disable=SC2064 # expand now: the trap must remove this build's directory
  trap "rm -rf '$root'" EXIT
  if ! build_rootfs "$root" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "debootstrap failed (log above, full log in $log)"
  fi
  tar -C "$root" --numeric-owner -c . |
    docker import \
      --change 'CMD ["/usr/local/sbin/jaco-node-init"]' \
      --change "LABEL jaco.harness.image=$tag" \
      --message "jaco harness node: $SUITE minbase + ${PACKAGES[*]}" \
      - "$tag" >/dev/null
  rm -rf "$root" "$log"
  trap - EXIT
  # Older recipes' images are dead weight; keep only ones a container still uses.
  local old
  for old in $(docker images --format '{{.Repository}}:{{.Tag}}' "$IMAGE_REPO"); do
    [ "$old" = "$tag" ] || docker rmi "$old" >/dev/null 2>&1 || true
  done
  echo "built $tag in $((SECONDS - started)) s" >&2
  echo "$tag"
  exec 8>&-
}

# ---------------------------------------------------------------------------------------------
# registry

# Starts docker-registry on a free port of every host address (the host's engine pushes to
# 127.0.0.1:PORT, which it trusts; nodes pull from the network gateway GW:PORT, which their
# engines are told to trust). Writes registry.pid and registry.port into the state directory.
start_registry() {
  local dir=$1
  need docker-registry "apt-get install docker-registry"
  if [ -f "$dir/registry.pid" ] && registry_running "$dir"; then
    return
  fi
  mkdir -p "$dir/registry-data"
  cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/registry-data
  delete:
    enabled: true
http:
  addr: 0.0.0.0:0
EOF
  : >"$dir/registry.log"
  setsid docker-registry serve "$dir/registry.yml" </dev/null >>"$dir/registry.log" 2>&1 &
  echo $! >"$dir/registry.pid"
  local deadline=$((SECONDS + 20)) port=""
  while [ -z "$port" ]; do
    port=$(sed -n 's/.*listening on [^ "]*:\([0-9][0-9]*\).*/\1/p' "$dir/registry.log" | head -n 1)
    [ -n "$port" ] && break
    # kill -0, not registry_running: right after the fork the child may not have exec'd
    # docker-registry yet, so its command line is still the shell's.
    kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null ||
      { cat "$dir/registry.log" >&2; die "docker-registry exited"; }
    [ "$SECONDS" -lt "$deadline" ] || die "docker-registry did not listen within 20 s"
    sleep 0.1
  done
  echo "$port" >"$dir/registry.port"
}

registry_running() {
  local pid
  pid=$(cat "$1/registry.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "docker-registry serve"
}

stop_registry() {
  local dir=$1
  if registry_running "$dir"; then
    kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
  fi
}

# ---------------------------------------------------------------------------------------------
# nodes

node_jaco() {
  local name=$1 index=$2
  shift 2
  docker exec "$(node_container "$name" "$index")" jaco "$@"
}

# Waits until node I's dockerd and jaco daemon answer.
wait_node() {
  local name=$1 index=$2 container
  container=$(node_container "$name" "$index")
  local deadline=$((SECONDS + wait_seconds))
  until docker exec "$container" docker version --format '{{.Server.Version}}' >/dev/null 2>&1 &&
    docker exec "$container" jaco cluster status -o json >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ] ||
      [ "$(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" != true ]; then
      echo "---- $container: docker logs (tail) ----" >&2
      docker logs --tail 30 "$container" >&2 2>&1 || true
      echo "---- $container: /var/log/dockerd.log (tail) ----" >&2
      docker exec "$container" tail -n 20 /var/log/dockerd.log >&2 2>&1 || true
      die "node $index of $name: dockerd and jaco daemon did not both answer within ${wait_seconds} s"
    fi
    sleep 0.3
  done
}

jaco_bin() {
  local bin=${JACO_BIN:-$repo/target/debug/jaco}
  [ -x "$bin" ] || die "jaco binary $bin not found (build it, or set JACO_BIN)"
  (cd "$(dirname "$bin")" && echo "$PWD/$(basename "$bin")")
}

create_node() {
  local name=$1 index=$2 image=$3 network=$4 registry=$5 bin=$6 daemon_extra=$7
  local container
  container=$(node_container "$name" "$index")
  if docker container inspect "$container" >/dev/null 2>&1; then
    return
  fi
  local volume
  for volume in docker jaco; do
    docker volume create --label "$LABEL=$name" "$container-$volume" >/dev/null
  done
  # Not --privileged: on this kind of host runc cannot grant every capability (see
  # testvm/README.md), so every capability but CAP_SYS_RESOURCE, no seccomp or AppArmor
  # profile, unmasked /proc and /sys, and every device.
  docker create \
    --name "$container" --hostname "n$index" \
    --label "$LABEL=$name" --label "jaco.harness.node=$index" \
    --network "$network" --network-alias "n$index" \
    --init \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined \
    --device-cgroup-rule 'a *:* rwm' \
    --tmpfs /run --tmpfs /tmp \
    --volume "$container-docker:/var/lib/docker" \
    --volume "$container-jaco:/var/lib/jaco" \
    --volume "$bin:/usr/local/bin/jaco:ro" \
    --volume "$here/node-init.sh:/usr/local/sbin/jaco-node-init:ro" \
    --env "JACO_NODE_NAME=n$index" \
    --env "JACO_REGISTRY=$registry" \
    --env "JACO_DAEMON_EXTRA=$daemon_extra" \
    "$image" >/dev/null
}

# Prints the voter count the membership policy keeps for N nodes.
voters_for() {
  local n=$1
  if [ "$n" -ge 7 ]; then echo 7; elif [ $((n % 2)) -eq 0 ]; then echo $((n - 1)); else echo "$n"; fi
}

# Succeeds when `jaco node list -o json` ($1) lists N ready nodes with the policy's voters.
nodes_ready() {
  python3 - "$1" "$2" "$(voters_for "$2")" <<'EOF'
import json, sys
nodes, count, voters = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ok = (len(nodes) == count
      and all(n["status"] == "ready" for n in nodes)
      and sum(n["role"] in ("leader", "follower") for n in nodes) == voters)
sys.exit(0 if ok else 1)
EOF
}

cmd_up() {
  local name=$1 count=$2
  check_name "$name"
  [[ "$count" =~ ^[1-9][0-9]*$ ]] || die "node count '$count' must be a positive number"
  need python3 "apt-get install python3"
  local bin image dir network
  bin=$(jaco_bin)
  image=$(cmd_image)
  dir=$(state_dir "$name")
  mkdir -p "$dir"
  network="$name-net"
  if ! docker network inspect "$network" >/dev/null 2>&1; then
    docker network create --label "$LABEL=$name" "$network" >/dev/null
  fi
  local subnet gateway
  subnet=$(docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' "$network")
  gateway=$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' "$network")
  [ -n "$gateway" ] || gateway=$(python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$subnet")
  echo "$subnet" >"$dir/subnet"
  echo "$gateway" >"$dir/gateway"
  start_registry "$dir"
  local registry
  registry="$gateway:$(cat "$dir/registry.port")"
  echo "$registry" >"$dir/registry"
  # Extra daemon.yaml text: given now, or the one the cluster was first started with.
  local daemon_extra
  if [ -n "${JACO_HARNESS_DAEMON_YAML:-}" ]; then
    printf '%s\n' "$JACO_HARNESS_DAEMON_YAML" >"$dir/daemon-extra.yaml"
  fi
  daemon_extra=$(cat "$dir/daemon-extra.yaml" 2>/dev/null || true)
  # The host as the nodes reach it (e.g. for a DNS upstream a test runs there).
  daemon_extra=${daemon_extra//@GATEWAY@/$gateway}

  local i
  for ((i = 0; i < count; i++)); do
    create_node "$name" "$i" "$image" "$network" "$registry" "$bin" "$daemon_extra"
    docker start "$(node_container "$name" "$i")" >/dev/null
  done
  for ((i = 0; i < count; i++)); do
    wait_node "$name" "$i"
  done

  # Form the cluster as an operator would: init on n0, a join token per node, join through n0.
  local status
  status=$(node_jaco "$name" 0 cluster status -o json)
  if ! python3 -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1])["initialized"] else 1)' "$status"; then
    node_jaco "$name" 0 cluster init -q >"$dir/bootstrap-token"
  fi
  docker exec "$(node_container "$name" 0)" cat /var/lib/jaco/pki/ca.crt >"$dir/ca.crt"
  local members
  members=$(node_jaco "$name" 0 node list -o json)
  for ((i = 1; i < count; i++)); do
    if python3 -c 'import json, sys; sys.exit(0 if any(n["name"] == sys.argv[2] for n in json.loads(sys.argv[1])) else 1)' "$members" "n$i"; then
      continue
    fi
    local token container
    container=$(node_container "$name" "$i")
    token=$(node_jaco "$name" 0 node issue-join-token --node-name "n$i" -q)
    docker exec -i "$container" sh -c 'cat >/etc/jaco/ca.crt' <"$dir/ca.crt"
    docker exec -e "JACO_TOKEN=$token" "$container" \
      jaco cluster join --peer n0:7000 --ca-cert /etc/jaco/ca.crt -q >/dev/null
  done

  local deadline=$((SECONDS + wait_seconds)) list=""
  until list=$(node_jaco "$name" 0 node list -o json 2>/dev/null) && nodes_ready "$list" "$count"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$list" >&2
      die "cluster $name: not $count ready nodes within ${wait_seconds} s (node list above)"
    fi
    sleep 0.3
  done
  echo "cluster $name: $count nodes ready; registry $registry; state $dir"
}

cmd_down() {
  local name=$1
  check_name "$name"
  local dir
  dir=$(state_dir "$name")
  stop_registry "$dir"
  local ids
  ids=$(docker ps -aq --filter "label=$LABEL=$name")
  # shellcheck disable=SC2086 # one id per word
  [ -z "$ids" ] || docker rm --force --volumes $ids >/dev/null
  ids=$(docker network ls -q --filter "label=$LABEL=$name")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker network rm $ids >/dev/null
  ids=$(docker volume ls -q --filter "label=$LABEL=$name")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker volume rm --force $ids >/dev/null
  rm -rf "$dir"
  echo "cluster $name: removed"
}

cmd_kill() {
  check_index "$1" "$2"
  docker kill --signal KILL "$(node_container "$1" "$2")" >/dev/null
}

cmd_start() {
  check_index "$1" "$2"
  docker start "$(node_container "$1" "$2")" >/dev/null
  wait_node "$1" "$2"
}

cmd_partition() {
  local name=$1 index=$2 dir
  check_index "$name" "$index"
  dir=$(state_dir "$name")
  local subnet gateway
  subnet=$(cat "$dir/subnet") || die "cluster $name has no state in $dir (was it started by up?)"
  gateway=$(cat "$dir/gateway")
  # Drops everything between this node and the cluster network except the gateway (the host:
  # registry). The table is replaced atomically, so partitioning twice is harmless, and its
  # drops win over whatever the node's dockerd accepts in its own tables.
  docker exec -i "$(node_container "$name" "$index")" nft -f - <<EOF
table inet $PARTITION_TABLE {}
delete table inet $PARTITION_TABLE
table inet $PARTITION_TABLE {
  chain prerouting {
    type filter hook prerouting priority -300; policy accept;
    iifname "eth0" ip saddr $subnet ip saddr != $gateway drop
  }
  chain output {
    type filter hook output priority -300; policy accept;
    oifname "eth0" ip daddr $subnet ip daddr != $gateway drop
  }
  chain forward {
    type filter hook forward priority -300; policy accept;
    oifname "eth0" ip daddr $subnet ip daddr != $gateway drop
  }
}
EOF
}

cmd_heal() {
  local name=$1 index=$2
  check_index "$name" "$index"
  docker exec -i "$(node_container "$name" "$index")" nft -f - <<EOF
table inet $PARTITION_TABLE {}
delete table inet $PARTITION_TABLE
EOF
}

cmd_push() {
  local name=$1 image=$2 repository=${3:-$2} dir
  dir=$(state_dir "$name")
  [ -f "$dir/registry" ] || die "cluster $name has no registry (was it started by up?)"
  registry_running "$dir" || die "the registry of cluster $name is not running"
  local port local_ref
  port=$(cat "$dir/registry.port")
  local_ref="127.0.0.1:$port/$repository"
  docker tag "$image" "$local_ref"
  local status=0
  docker push --quiet "$local_ref" >/dev/null || status=$?
  docker rmi "$local_ref" >/dev/null 2>&1 || true
  [ "$status" -eq 0 ] || die "docker push $local_ref failed"
  echo "$(cat "$dir/registry")/$repository"
}

cmd_info() {
  local name=$1 dir
  dir=$(state_dir "$name")
  echo "state:    $dir"
  echo "network:  $name-net $(cat "$dir/subnet" 2>/dev/null) gateway $(cat "$dir/gateway" 2>/dev/null)"
  echo "registry: $(cat "$dir/registry" 2>/dev/null) (push via 127.0.0.1:$(cat "$dir/registry.port" 2>/dev/null))"
  docker ps -a --filter "label=$LABEL=$name" --format 'node:     {{.Names}} {{.Status}}'
}

main() {
  [ $# -ge 1 ] || { usage >&2; exit 2; }
  local command=$1
  shift
  need docker "apt-get install docker.io"
  case "$command" in
  image) [ $# -eq 0 ] || { usage >&2; exit 2; }; cmd_image ;;
  up) [ $# -eq 2 ] || { usage >&2; exit 2; }; cmd_up "$@" ;;
  down) [ $# -eq 1 ] || { usage >&2; exit 2; }; cmd_down "$@" ;;
  kill | start | partition | heal)
    [ $# -eq 2 ] || { usage >&2; exit 2; }
    "cmd_$command" "$@"
    ;;
  jaco)
    [ $# -ge 2 ] || { usage >&2; exit 2; }
    check_index "$1" "$2"
    local tty=(-i)
    [ -t 0 ] && [ -t 1 ] && tty=(-it)
    docker exec "${tty[@]}" "$(node_container "$1" "$2")" jaco "${@:3}"
    ;;
  exec)
    [ $# -ge 3 ] || { usage >&2; exit 2; }
    check_index "$1" "$2"
    local tty=(-i)
    [ -t 0 ] && [ -t 1 ] && tty=(-it)
    docker exec "${tty[@]}" "$(node_container "$1" "$2")" "${@:3}"
    ;;
  push) if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage >&2; exit 2; fi; cmd_push "$@" ;;
  registry) [ $# -eq 1 ] || { usage >&2; exit 2; }; cat "$(state_dir "$1")/registry" ;;
  info) [ $# -eq 1 ] || { usage >&2; exit 2; }; cmd_info "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
  esac
}

main "$@"
