#!/usr/bin/env bash
# Runs the mesh on an embedded default: two workloads in network namespaces, a ztunnel
# beside each, traffic through the tunnel. Needs root (network namespaces, nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_tools
cargo build --release -p ztunnel -p e2e --bins
exec target/release/demo
