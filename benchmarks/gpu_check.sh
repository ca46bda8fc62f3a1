#!/usr/bin/env bash
# GPU checks for posed (issue 12), one prepared run of under 5 minutes on a CUDA machine.
#
#   make gpu-wheels                  # here, with network: wheels the GPU machine may lack -> .whl/
#   bash benchmarks/gpu_check.sh     # there, from the repository root (no network needed)
#
# The GPU machine needs python3 with a CUDA build of torch, timm, numpy, pyyaml, msgpack,
# safetensors, opencv and pytest (a stock PyTorch image has them). PyAV, pyzmq and pydantic
# are installed from .whl/ when present. posed itself is installed from this checkout into a
# private folder; nothing is written outside it and $OUT.
#
# Prints the card and versions, runs the GPU tests (pytest -m gpu), then `posed bench --case
# gpu`, and writes the record to $OUT/gpu_check.json (default: benchmarks/results/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
SITE=${POSED_SITE:-/tmp/posed-site}
mkdir -p "$OUT" "$SITE"
PY=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
fi
# posed from this checkout (package-dir mapping needs a real install, not PYTHONPATH=.)
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade \
    --target "$SITE" . || { echo "gpu_check: installing posed failed" >&2; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY - <<'PYEOF'
import json, platform, torch, importlib.metadata as md
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  **{n: v(n) for n in ("timm", "onnxruntime", "onnxruntime-gpu", "av", "pyzmq",
                                       "posed")}}))
PYEOF

echo "== GPU tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider -m gpu -o addopts="" tests/test_accel.py
tests_rc=$?

echo "== posed bench --case gpu"
timeout 240 $PY -c 'import sys; from posed.cli import main; sys.exit(main(sys.argv[1:]))' \
    bench --case gpu --seconds "${SECONDS_PER_CASE:-1.5}" --out "$OUT/gpu_check.json"
bench_rc=$?
echo "== gpu_check: tests rc=$tests_rc, bench rc=$bench_rc, record $OUT/gpu_check.json"
exit $(( tests_rc != 0 || bench_rc != 0 ))
