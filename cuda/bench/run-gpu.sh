#!/usr/bin/env bash
# The GPU machine's one command: the GPU tests, the bench, PyTorch SDPA on the same shapes and
# an Nsight Compute profile of one step, everything written under $1 (default $OUT).
# The binaries are built on a development machine (cuda/bench/build-carry.sh) and carried in
# bin_carry/cuda/; this machine needs the NVIDIA driver, NVRTC and (for the baseline) PyTorch.
set -uo pipefail
out=${1:-${OUT:?give an output directory}}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$here/bin_carry/cuda
mkdir -p "$out"
for lib in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$lib" ] && export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
done
# cudarc looks for libnvrtc.so / libnvrtc.so.13: PyTorch's pip wheels carry NVRTC too.
py_nvrtc=$(python3 -c "import nvidia.cuda_nvrtc, os; print(os.path.dirname(nvidia.cuda_nvrtc.__file__) + '/lib')" 2>/dev/null || true)
[ -n "$py_nvrtc" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$py_nvrtc
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv > "$out/nvidia-smi.csv" 2>&1
if [ -z "${NO_TESTS:-}" ]; then
  echo "== GPU tests" | tee "$out/tests.txt"
  "$bin"/gpu-tests --ignored --test-threads 1 --nocapture >> "$out/tests.txt" 2>&1; echo "rc=$?" >> "$out/tests.txt"
  tail -5 "$out/tests.txt"
fi
echo "== bench"
"$bin"/fibquant-cuda-bench --out "$out/bench.json" ${BENCH_ARGS:-} 2> "$out/bench.log"; echo "bench rc=$?"
tail -3 "$out/bench.log"
echo "== PyTorch SDPA"
python3 "$here/cuda/bench/sdpa.py" --out "$out/sdpa.json" ${SDPA_ARGS:-} > "$out/sdpa.log" 2>&1; echo "sdpa rc=$?"
tail -2 "$out/sdpa.log"
if command -v ncu >/dev/null && [ -z "${NO_NCU:-}" ]; then
  echo "== Nsight Compute: one step at d 128, group 8, 32k context, batch 16, 2 bits"
  ncu --kernel-name attend --launch-skip 3 --launch-count 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy \
      --section LaunchStats "$bin"/fibquant-cuda-bench --out /tmp/ncu-bench.json --dims 128 \
      --groups 8 --contexts 32768 --batches 16 --bits 2 --rounds 1 > "$out/ncu-b2.txt" 2>&1
  echo "ncu rc=$?"; grep -E "Memory Throughput|DRAM Throughput|Compute \(SM\)|Duration" "$out/ncu-b2.txt" | head
  echo "== Nsight Compute: the same step in fp16"
  ncu --kernel-name attend --launch-skip 3 --launch-count 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy \
      --section LaunchStats "$bin"/fibquant-cuda-bench --out /tmp/ncu-bench-fp16.json --dims 128 \
      --groups 8 --contexts 32768 --batches 16 --bits 0 --rounds 1 > "$out/ncu-fp16.txt" 2>&1
  echo "ncu rc=$?"
fi
