#!/usr/bin/env bash
# Runs every test: unit, in-process, and end-to-end over network namespaces (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_tools
cargo test --workspace "$@"
