#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (see the device tool's README), in under
# 600 s: dlbench verify with JAX at both levels, setup.yml on this machine's GPU path
# (gpu_setup_check.sh: nothing downloaded), and the performance check (gpu_perf_check.sh: the
# modes benchmark on the real data with and without each opt-in change).
# Everything lands in /tmp/gpu-check, packed into $OUT/gpu-check.tar.gz after every step so
# that a run cut short still returns what it did; the log is $OUT/log.txt.
#
# The lent machine has JAX, PyTorch and nvidia-ml-py but no Keras and no TensorFlow (whose
# wheels are far over the 64 MiB a call may carry). Carry Keras and dlstation's missing
# dependencies as wheels in .whl/ and the data in .data/, then:
#   bash bench/perf/gpu_check.sh
set -uo pipefail
OUT="${OUT:-gpu-check-out}"
WORK=/tmp/gpu-check
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
export DLSTATION_DATA_DIR="${DLSTATION_DATA_DIR:-$PWD/.data}"
export DLSTATION_CACHE_DIR=/tmp/gpu-check-cache PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

pack() { tar czf "$OUT/gpu-check.tar.gz" -C /tmp gpu-check; }
step() {  # step NAME SECONDS COMMAND...: run, time and pack, whatever the exit status
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name (limit ${limit}s) $(date -u +%FT%TZ)"
  timeout "$limit" "$@"
  echo "== $name: exit $? after $((SECONDS - start)) s"
  pack
}

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,power.limit \
    --format=csv
  python3 - <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

found = []
for name in ("jax", "jaxlib", "keras", "numpy", "torch", "nvidia-ml-py", "tensorflow"):
    try:
        found.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        found.append(f"{name} absent")
print("python", sys.version.split()[0], "|", " | ".join(found))
PY
} | tee "$WORK/machine.txt"

# dlbench verify at both levels: quick (no load; goal <= 3 s) and full (probes on every GPU in
# parallel; goal <= 20 s on one GPU). Each JSON holds its own timing breakdown ("timing").
step "verify quick jax" 30 bash -o pipefail -c \
  "python3 -m bench verify --backend jax --level quick --no-imds --expect-gpu | tee $WORK/verify-quick.txt; \
   python3 -m bench verify --backend jax --level quick --no-imds --expect-gpu --json > $WORK/verify-quick.json"
step "verify full jax" 90 bash -o pipefail -c \
  "python3 -m bench verify --backend jax --no-imds --expect-gpu --json > $WORK/verify-jax.json"
step "setup.yml, GPU path" 100 env OUT="$WORK" bash bench/perf/gpu_setup_check.sh
step "performance" 310 env OUT="$WORK" LIMIT=290 bash bench/perf/gpu_perf_check.sh
python3 - "$WORK"/verify-quick.json "$WORK"/verify-jax.json <<'PY'
import json
import sys

for path in sys.argv[1:]:
    try:
        document = json.load(open(path))
    except (OSError, ValueError) as error:
        print(f"{path}: {error}")
        continue
    print(path, document["verdict"], json.dumps(document["timing"]))
PY
