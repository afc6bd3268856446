#!/usr/bin/env bash
# The whole mesh on this machine, as `meshctl local up examples/local` makes it: two nodes,
# each with a node agent and one shared ztunnel for all its pods, meshd serving the manifests.
# Then it shows what happened: who is captured, the identities each side proved, a denial
# and the policy that decided it, and TLS on the link between the nodes. `--keep` leaves the
# mesh up (`meshctl local status|exec|down`). Needs root (network namespaces, nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_tools
keep=false
[ "${1:-}" = "--keep" ] && keep=true
cargo build --release -p meshctl -p control-plane -p node-agent -p ztunnel -p waypoint -p e2e --bins
export PATH="$PWD/target/release:$PATH"
state=/tmp/meshctl-local/mesh
say() { printf '\n== %s\n' "$*"; }
field() { grep -o "$1=[^ ]*" | head -1; }
# The last inbound access-log line of a node's ztunnel.
last_inbound() { grep -a 'direction="inbound"' "$state/logs/ztunnel-$1.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1; }
roundtrip() { meshctl local exec "$1" -- meshapp roundtrip --connect "$2" --message "$3" 2>&1 | head -1; }

say "meshctl local up examples/local"
meshctl local up examples/local

say "web (shop, node-a) -> api (shop, node-b) through the service VIP"
roundtrip shop/web 10.96.0.20:80 "hello from web"
line=$(last_inbound node-b)
echo "node-b's ztunnel: $(echo "$line" | field src.identity) -> $(echo "$line" | field dst.identity)"

say "db (shop, node-b) -> api: refused by AuthorizationPolicy shop/api-from-web-only"
roundtrip shop/db 10.244.1.21:8080 "hello from db" || true
line=$(last_inbound node-b)
echo "node-b's ztunnel: $(echo "$line" | field src.identity) refused, $(echo "$line" | grep -o 'policy="[^"]*"' || true)"

say "batch (legacy, not in the mesh) -> api: no identity to prove, refused"
roundtrip legacy/batch 10.244.1.21:8080 "hello from batch" || true
line=$(last_inbound node-b)
echo "node-b's ztunnel: $(echo "$line" | field src.addr) (no identity) refused, $(echo "$line" | grep -o 'policy="[^"]*"' || true)"

say "the link between the nodes: TLS only"
pcap=$(mktemp)
ip netns exec mesh.sw tcpdump -q -U -i n0 -w "$pcap" tcp 2>/dev/null &
dump=$!
sleep 1
roundtrip shop/web 10.244.1.21:8080 "PLAINTEXT-NEVER-ON-THE-WIRE"
sleep 1
kill "$dump"; wait "$dump" 2>/dev/null || true
if LC_ALL=C grep -q -a 'PLAINTEXT-NEVER-ON-THE-WIRE' "$pcap"; then
  echo "the application's plaintext was seen on the link" >&2; exit 1
fi
records=$(LC_ALL=C grep -c -a -P '\x17\x03\x03' "$pcap" || true)
echo "captured $(stat -c %s "$pcap") bytes on node-a's uplink: TLS application-data records present ($records), the app's plaintext not visible"
rm -f "$pcap"

say "HTTP to payments goes through shop's waypoint, which decides each request (L7 policy)"
http() { # pod method path [user-agent]
  out=$(meshctl local exec "$1" -- meshapp http --addr 10.96.0.21:80 --method "$2" --path "$3" --user-agent "${4:-curl/8}" 2>&1 | tr '\n' ' ')
  printf '  %-13s %-6s %-28s %-12s -> %s\n' "$1" "$2" "$3" "${4:-curl/8}" "$out"
}
http shop/web POST /api/v2/payments/process
http shop/web GET /api/v2/payments/process
http shop/db POST /api/v2/payments/process
http shop/web POST /api/v2/payments/process sqlmap/1.7
echo "a noisy client is rate limited (payments-per-client: 3, then 1 per 10 s):"
for _ in 1 2 3; do http shop/web POST /api/v2/payments/process; done
echo "the waypoint's access log names the policy of each denial and the limit of each 429:"
sleep 0.3 # the waypoint writes its log in batches, every 100 ms
grep -a 'request complete' "$state/logs/waypoint-shop.waypoint-0.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -E ' status=(403|429) ' |
  sed -E 's/.*src\.identity=([^ ]*) dst\.addr=([^ ]*).* method=([^ ]*) path=([^ ]*) status=([0-9]*).* policy=(.*)$/  peer=\1 method=\3 path=\4 target=\2 status=\5 policy=\6/' || true

say "meshctl local status"
meshctl local status
if $keep; then
  echo; echo "left up: meshctl local exec <ns>/<pod> -- CMD, meshctl local down"
else
  say "meshctl local down"
  meshctl local down
fi
