#!/bin/bash
# The init of one harness node container (testvm/cluster.sh bind-mounts it read-only as
# /usr/local/sbin/jaco-node-init and runs it under docker-init): makes /sys and the cgroup
# mounts writable, starts the node's own dockerd, writes /etc/jaco/daemon.yaml and keeps
# `jaco daemon` running, restarting it one second after it exits (as systemd's Restart=always
# does on a real node). SIGTERM stops jaco, then dockerd. It must not form or join a cluster:
# that is cluster.sh's job, through the CLI, as an operator would.
#
# Environment (set by cluster.sh): JACO_NODE_NAME (n0, n1, …), JACO_REGISTRY (host:port of the
# harness registry, trusted as an insecure registry; may be empty), JACO_STORAGE_DRIVER
# (default overlay2; /var/lib/docker is a docker volume, not the container's overlay root),
# JACO_DAEMON_EXTRA (text appended to daemon.yaml, e.g. `scheduler: {node_lost_after_ms: 4000}`).
set -euo pipefail

node=${JACO_NODE_NAME:?JACO_NODE_NAME is not set}
registry=${JACO_REGISTRY:-}
storage_driver=${JACO_STORAGE_DRIVER:-overlay2}

log() { echo "jaco-node-init[$node]: $*"; }

# Docker mounts /sys and the container's cgroups read-only without --privileged (which this
# harness cannot use, see testvm/README.md); the inner engine must create cgroups below ours.
mount -o remount,rw /sys
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2 (private cgroup namespace): writable, and our processes moved out of the root
  # so that the controllers can be delegated to the inner engine's cgroups.
  mount -o remount,rw /sys/fs/cgroup
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
    >/sys/fs/cgroup/cgroup.subtree_control
else
  for mount_point in /sys/fs/cgroup/*; do
    if mountpoint -q "$mount_point"; then
      mount -o remount,bind,rw "$mount_point"
    fi
  done
fi

mkdir -p /etc/docker /etc/jaco /var/lib/jaco /run/jaco
if [ -n "$registry" ]; then
  insecure="[\"$registry\"]"
else
  insecure="[]"
fi
cat >/etc/docker/daemon.json <<EOF
{
  "storage-driver": "$storage_driver",
  "insecure-registries": $insecure,
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF

cat >/etc/jaco/daemon.yaml <<EOF
node_name: $node
data_dir: /var/lib/jaco
api_listen: 0.0.0.0:7000
advertise: $node:7000
socket: /run/jaco/jaco.sock
socket_group: null
metrics_listen: 0.0.0.0:9100
log: info,openraft=warn
log_format: json
EOF
if [ -n "${JACO_DAEMON_EXTRA:-}" ]; then
  printf '%s\n' "$JACO_DAEMON_EXTRA" >>/etc/jaco/daemon.yaml
fi

dockerd_pid=""
jaco_pid=""
stopping=""
on_term() {
  stopping=yes
  log "stopping"
  [ -z "$jaco_pid" ] || kill -TERM "$jaco_pid" 2>/dev/null || true
  [ -z "$jaco_pid" ] || wait "$jaco_pid" 2>/dev/null || true
  [ -z "$dockerd_pid" ] || kill -TERM "$dockerd_pid" 2>/dev/null || true
  [ -z "$dockerd_pid" ] || wait "$dockerd_pid" 2>/dev/null || true
  exit 0
}
trap on_term TERM INT

log "starting dockerd ($storage_driver, insecure registry: ${registry:-none})"
dockerd >>/var/log/dockerd.log 2>&1 &
dockerd_pid=$!
deadline=$((SECONDS + 60))
until docker version --format '{{.Server.Version}}' >/dev/null 2>&1; do
  if ! kill -0 "$dockerd_pid" 2>/dev/null; then
    log "dockerd exited; the end of /var/log/dockerd.log:"
    tail -n 20 /var/log/dockerd.log
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "dockerd did not answer within 60 s; starting jaco anyway (it reports docker down)"
    break
  fi
  sleep 0.2
done
log "dockerd answers"

while [ -z "$stopping" ]; do
  jaco daemon --config /etc/jaco/daemon.yaml &
  jaco_pid=$!
  status=0
  wait "$jaco_pid" || status=$?
  jaco_pid=""
  [ -z "$stopping" ] || break
  log "jaco daemon exited with status $status; restarting in 1 s"
  sleep 1
done
