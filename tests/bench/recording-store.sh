#!/usr/bin/env bash
# Issue 26: what shipping recordings to object storage costs in TPS.
#
# pgbench select-only through `hoop exec`, `recording.rows: summary`, with the
# recordings kept local only vs shipped to a real S3 API (moto's server on
# loopback), alternating in one run so both see the same machine. Prints each
# run's TPS and hoop's CPU time per transaction (from its exit log line:
# steadier than TPS on a shared machine), the means and the ratios store/local.
#
#   tests/bench/recording-store.sh            # HOOP=target/release/hoop by default
#   ROUNDS=3 SECONDS_PER=15 CLIENTS=4 INTERVAL=10s tests/bench/recording-store.sh
#
# Needs root (eBPF), pgbench, the PostgreSQL on 127.0.0.1:5432 and moto_server
# (`cargo xtask setup` installs it). Uses its own database, hoop_store_bench.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
HOOP=${HOOP:-$root/target/release/hoop}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-15}
CLIENTS=${CLIENTS:-4}
INTERVAL=${INTERVAL:-10s}
DB=hoop_store_bench
MOTO=${HOOP_MOTO_SERVER:-}
if [[ -z $MOTO ]]; then
    if [[ -x $HOME/.local/share/hoop/moto/bin/moto_server ]]; then
        MOTO=$HOME/.local/share/hoop/moto/bin/moto_server
    else
        MOTO=moto_server
    fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
moto_port=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -sf -X PUT "http://127.0.0.1:$moto_port/bench" >/dev/null && break
    sleep 0.1
done

export AWS_ENDPOINT=http://127.0.0.1:$moto_port AWS_ALLOW_HTTP=true \
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
pgbench -q -i -s 10 -h 127.0.0.1 -U postgres "$DB" >/dev/null 2>&1

config() { # mode
    local extra=""
    [[ $1 == store ]] && extra="  store: s3://bench/run
  ship_interval: $INTERVAL"
    cat >"$work/$1.yaml" <<YAML
intercept:
  ports: [5432]
admin:
  listen: 127.0.0.1:$(free_port)
recording:
  dir: $work/$1-recordings
  rows: summary
$extra
YAML
}
config local
config store

declare -A sum=([local]=0 [store]=0) cpu=([local]=0 [store]=0)
for round in $(seq "$ROUNDS"); do
    for mode in local store; do
        out=$("$HOOP" exec --config "$work/$mode.yaml" -- \
            pgbench -n -S -c "$CLIENTS" -j 2 -T "$SECONDS_PER" -h 127.0.0.1 -U postgres "$DB" 2>&1)
        tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | head -1)
        [[ -n $tps ]] || { echo "pgbench failed: $out" >&2; exit 1; }
        xacts=$(grep -oP 'number of transactions actually processed: \K[0-9]+' <<<"$out" | head -1)
        user=$(grep -oP 'cpu_user_seconds=\K[0-9.]+' <<<"$out" | tail -1)
        sys=$(grep -oP 'cpu_system_seconds=\K[0-9.]+' <<<"$out" | tail -1)
        us=$(python3 -c "print(round(($user + $sys) * 1e6 / $xacts, 2))")
        echo "round $round $mode: tps $tps, hoop cpu ${us} us/transaction"
        sum[$mode]=$(python3 -c "print(${sum[$mode]} + $tps)")
        cpu[$mode]=$(python3 -c "print(${cpu[$mode]} + $us)")
    done
done
shipped=$(curl -sf "http://127.0.0.1:$moto_port/bench?list-type=2" | grep -o '<Size>[0-9]*' | cut -d'>' -f2 | paste -sd+ | bc 2>/dev/null || echo "?")
left=$(find "$work/store-recordings" -name '*.jsonl' | wc -l)
python3 - "${sum[local]}" "${sum[store]}" "${cpu[local]}" "${cpu[store]}" "$ROUNDS" <<PY
import sys
local, store, cl, cs = map(float, sys.argv[1:5])
rounds = int(sys.argv[5])
print(f"mean tps: local {local/rounds:.1f}, store {store/rounds:.1f}; store/local = {store/local:.3f}")
print(f"mean hoop cpu: local {cl/rounds:.2f} us/xact, store {cs/rounds:.2f} us/xact; store/local = {cs/cl:.3f}")
PY
echo "bytes in the store: $shipped; recordings left in the spool: $left"
psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB"
