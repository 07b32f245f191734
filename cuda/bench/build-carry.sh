#!/usr/bin/env bash
# Builds what cuda/bench/run-gpu.sh runs on the GPU machine (which has no Rust toolchain and no
# package registry) into bin_carry/cuda/ (git-ignored): the bench and the GPU test binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bin_carry/cuda
cargo build --release -p fibquant-cuda --bin fibquant-cuda-bench
cp target/release/fibquant-cuda-bench bin_carry/cuda/
test_bin=$(cargo test --release -p fibquant-cuda --test gpu --no-run --message-format=json 2>/dev/null \
  | python3 -c "import json,sys; print([m['executable'] for m in map(json.loads, sys.stdin) if m.get('executable') and m['target']['name'] == 'gpu' and 'test' in m['target']['kind']][-1])")
cp "$test_bin" bin_carry/cuda/gpu-tests
ls -la bin_carry/cuda
