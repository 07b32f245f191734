#!/usr/bin/env bash
# The Hugging Face tests on a machine with PyTorch and transformers but no package registry
# and no Rust toolchain (the GPU machine):
#
#   bash python/tests/run_gpu_machine.sh WHEEL_DIR OUT_DIR
#
# WHEEL_DIR holds a prebuilt abi3 wheel of fibquant (`maturin build --release` in python/,
# built on the development machine) and, for machines without pytest, the pytest wheels
# (pytest, pluggy, iniconfig, packaging). Nothing is installed into the machine's Python:
# the wheels go to OUT_DIR/site (`pip install --no-index --no-deps --target`), found through
# PYTHONPATH. numpy, torch and transformers must be there already. Prints the versions, runs
# python/tests/test_hf.py and python/examples/hf_generate.py, and writes everything it prints
# to OUT_DIR/hf-test.log. Exits with pytest's status (the example's failure fails it too).
set -uo pipefail
wheels=${1:?usage: run_gpu_machine.sh WHEEL_DIR OUT_DIR}
out=${2:?usage: run_gpu_machine.sh WHEEL_DIR OUT_DIR}
py=${PYTHON:-python3}
cd "$(dirname "$0")/../.."
mkdir -p "$out"
log="$out/hf-test.log"
exec > >(tee "$log") 2>&1

site="$out/site"
rm -rf "$site"
wheel=$(ls "$wheels"/fibquant-*-abi3-*.whl 2>/dev/null | sort | tail -1)
[ -n "$wheel" ] || { echo "no fibquant abi3 wheel in $wheels"; exit 2; }
echo "== wheel: $wheel"
"$py" -m pip install --quiet --no-index --no-deps --target "$site" "$wheel" || exit 2
if ! "$py" -c "import pytest" 2>/dev/null; then
    echo "== pytest missing: installing it from $wheels"
    "$py" -m pip install --quiet --no-index --no-deps --target "$site" "$wheels"/pytest/*.whl || exit 2
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

echo "== versions"
"$py" - <<'PY'
import platform, sys
print("python", sys.version.replace("\n", " "), platform.machine(), platform.libc_ver())
import numpy, torch, transformers, pytest, fibquant
print("numpy", numpy.__version__, "| torch", torch.__version__, "| transformers", transformers.__version__,
      "| pytest", pytest.__version__, "| fibquant", fibquant.__version__, fibquant.__file__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY

echo "== pytest python/tests/test_hf.py"
"$py" -m pytest python/tests/test_hf.py -v -s -rs -p no:cacheprovider
status=$?

echo "== python/examples/hf_generate.py"
"$py" python/examples/hf_generate.py || status=1

echo "== exit status $status (log: $log)"
exit $status
