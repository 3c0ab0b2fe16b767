# Sourced (not executed) by the postgres image's entrypoint the first time the primary starts
# with an empty data directory: creates the role the replicas connect as and allows it to
# stream WAL. The password comes from the `replication_password` secret.

repl_password="$(< /run/secrets/replication_password)"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=repl_password="$repl_password" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'repl_password';
SQL
unset repl_password

echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
