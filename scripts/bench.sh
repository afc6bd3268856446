#!/usr/bin/env bash
# The benchmark harness: direct vs through the ztunnels, alternating rounds (needs root).
# Arguments go to the harness, e.g. --short, --rounds 3, --out results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_tools
cargo build --release -p ztunnel -p e2e --bins
exec target/release/bench "$@"
