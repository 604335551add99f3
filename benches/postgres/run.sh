#!/usr/bin/env bash
# The PostgreSQL side of the referral benchmark (BENCHMARKS.md): PostgreSQL 15 on a
# fresh cluster in a temporary directory, durable commits (fsync, synchronous_commit),
# 100,000 seeded players, then pgbench running claim.sql at 16 and at 64 clients.
#
#   benches/postgres/run.sh [--players N] [--seconds S] [--clients "16 64"] [--dir D]
#
# Needs PostgreSQL 15's server binaries (Debian: apt-get install postgresql-15) and a
# `postgres` user to run them as when started as root. The cluster lives under --dir
# (default /tmp), which must be a real disk for the commits to be durable: not tmpfs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
players=100000 seconds=30 clients="16 64" dir=/tmp
while [ $# -gt 0 ]; do
    case $1 in
        --players) players=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
bin=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v postgres)")
if [ "$(stat -f -c %T "$dir")" = tmpfs ]; then
    echo "$dir is tmpfs: fsync would be free there; give --dir on a disk" >&2
    exit 2
fi
work=$(mktemp -d "$dir/playtree-pg.XXXXXX")
as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$work"
    as=(runuser -u postgres --)
fi
port=$((20000 + RANDOM % 20000))
cleanup() {
    "${as[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as[@]}" "$bin/initdb" -D "$work/data" -A trust -U bench >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
max_connections = 200
shared_buffers = 512MB
fsync = on
synchronous_commit = on
wal_sync_method = fdatasync
full_page_writes = on
CONF
"${as[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
psql=(env PGOPTIONS=--client-min-messages=warning "$bin/psql" -h 127.0.0.1 -p "$port" -U bench -d postgres -v ON_ERROR_STOP=1 -q)
echo "seeding $players players..."
start=$(date +%s)
sed "s/:players/$players/" "$here/schema.sql" | "${psql[@]}" >/dev/null
echo "seeded in $(( $(date +%s) - start )) s"
for c in $clients; do
    "${psql[@]}" -c "CHECKPOINT" >/dev/null
    rm -f "$work"/pgbench_log.*
    (cd "$work" && "$bin/pgbench" -h 127.0.0.1 -p "$port" -U bench -n -c "$c" -j 2 -T "$seconds" \
        -D players="$players" -f "$here/claim.sql" --log --log-prefix=pgbench_log postgres) \
        | grep -E "^(tps|number of (transactions|failed)|latency average)"
    cat "$work"/pgbench_log.* | python3 -c '
import sys
# Per transaction: client, transaction number, latency in µs (or "failed"/"skipped").
fields = (line.split() for line in sys.stdin)
lat = sorted(int(f[2]) for f in fields if len(f) > 2 and f[2].isdigit())
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000
print(f"clients {sys.argv[1]}: {len(lat)} claims, p50 {pick(0.50):.1f} ms, p99 {pick(0.99):.1f} ms, max {lat[-1] / 1000:.1f} ms")
' "$c"
done
