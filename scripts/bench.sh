#!/usr/bin/env bash
# The benchmark harness: direct vs through the ztunnels, alternating rounds (needs root).
# Arguments go to the harness, e.g. --short, --rounds 3, --out results.json; `--xds-scale`
# first runs the control-plane scale benchmark instead, `--waypoint` the waypoint's (HTTP at a
# fixed rate through client ztunnel -> waypoint -> server ztunnel vs ztunnel only on a
# `meshctl local` cluster) (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_tools
cargo build --release -p ztunnel -p control-plane -p node-agent -p meshctl -p waypoint -p e2e --bins
if [[ "${1:-}" == "--xds-scale" ]]; then
    # The control plane at scale: 10,000 pods, 1,000 services, 1,000 policies, 100 clients.
    shift
    exec target/release/xds_scale "$@"
fi
if [[ "${1:-}" == "--waypoint" ]]; then
    shift
    exec target/release/bench_waypoint "$@"
fi
exec target/release/bench "$@"
