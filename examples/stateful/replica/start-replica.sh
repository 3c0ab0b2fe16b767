#!/usr/bin/env bash
# Entry point of a streaming replica of the `primary` service.
#
# On the first start (empty data directory) it clones the primary with pg_basebackup, which
# also writes standby.signal and the connection settings (-R), so PostgreSQL starts as a hot
# standby. On every start it then hands over to the image's own entrypoint with the
# container's command.
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"

  until pg_isready -h primary -p 5432 -q; do
    echo "start-replica: waiting for the primary" >&2
    sleep 2
  done

  PGPASSWORD="$(< /run/secrets/replication_password)"
  export PGPASSWORD
  if ! gosu postgres pg_basebackup -h primary -p 5432 -U replicator \
      -D "$PGDATA" -X stream -R --checkpoint=fast; then
    # Leave an empty directory so that the next start tries again from scratch.
    find "$PGDATA" -mindepth 1 -delete
    exit 1
  fi
  unset PGPASSWORD
fi

exec docker-entrypoint.sh "$@"
