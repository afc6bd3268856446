#!/usr/bin/env bash
# The waypoint's instructions per request, counted by valgrind (callgrind): repeatable on a
# noisy machine, where its CPU seconds are not (docs/BENCHMARKS.md). Runs `bench_waypoint` at
# 100 requests/s with the waypoint under callgrind, counts from after the warm-up over a
# window of the `via` run, and divides by the access-log lines written in that window.
# Needs root and valgrind. Arguments: the window in seconds (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_tools
command -v callgrind_control >/dev/null || { echo "needs valgrind" >&2; exit 1; }
window=${1:-15}
cargo build --release -p ztunnel -p control-plane -p node-agent -p meshctl -p waypoint -p e2e --bins
bin=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$bin" "$out"' EXIT
for b in meshctl meshd node-agent ztunnel meshapp bench_waypoint; do cp "target/release/$b" "$bin/"; done
cp target/release/waypoint "$bin/waypoint.real"
cat > "$bin/waypoint" <<WRAP
#!/bin/sh
# No drain window: the SIGINT below ends the count, and the process must exit to write it.
exec env TERMINATION_DRAIN_DURATION_SECONDS=0 valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.%p "$bin/waypoint.real" "\$@"
WRAP
chmod +x "$bin/waypoint"
log=/tmp/bench-waypoint-instructions/state/instructions/logs/waypoint-bench.waypoint-0.log
rm -rf /tmp/bench-waypoint-instructions
# bench_waypoint's files go under $TMPDIR/bench-waypoint-<name>.
"$bin/bench_waypoint" --name instructions --rounds 1 --secs $((window + 25)) --rps 100 \
    --waypoint-process callgrind-amd64 --out "$out/results.json" > "$out/bench.log" 2>&1 &
bench=$!
# The first access lines are the warm-up; start counting a little after them.
for _ in $(seq 120); do
    grep -q ' access: ' "$log" 2>/dev/null && break
    sleep 1
done
sleep 8
pid=$(ls "$out" | sed -n 's/^callgrind\.\([0-9]*\)$/\1/p' | head -1)
[ -n "$pid" ] || { echo "the waypoint did not start under callgrind" >&2; cat "$out/bench.log" >&2; exit 1; }
callgrind_control -z "$pid" >/dev/null
from=$(date -u +%H:%M:%S)
sleep "$window"
kill -INT "$pid"
to=$(date -u +%H:%M:%S)
wait "$bench" || true
requests=$(awk -v a="$from" -v b="$to" '/ access: / { t = substr($1, 12, 8); if (t >= a && t < b) n++ } END { print n + 0 }' "$log")
total=$(callgrind_annotate "$out/callgrind.$pid" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
[ "$requests" -gt 0 ] || { echo "no requests counted" >&2; exit 1; }
echo "waypoint: $((total / requests)) instructions per request ($requests requests, $total instructions)"
