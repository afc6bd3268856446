#!/usr/bin/env bash
# Runs the mesh as a new user first meets it: meshd, the control plane, serves the manifests
# in examples/mesh/ to a dedicated ztunnel beside each of three workloads in network
# namespaces; traffic through the tunnel, and a refusal by the example's policy.
# Needs root (network namespaces, nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_tools
cargo build --release -p ztunnel -p control-plane -p e2e --bins
exec target/release/demo
