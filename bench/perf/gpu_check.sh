#!/usr/bin/env bash
# The GPU checks, as one script for a GPU machine, in under 600 s: dlbench verify with JAX at
# both levels on every GPU, timed against its goals, and with a wrong --expect-gpus; setup.yml
# on this machine's GPU path (gpu_setup_check.sh: nothing downloaded); the performance check
# (gpu_perf_check.sh: the modes benchmark on the real data with and without each opt-in change).
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

# Without a working driver there is nothing to check: say so and stop, never wait on it.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: nvidia-smi not found: run this on a machine with an NVIDIA GPU and its driver"
  exit 1
fi
if ! GPUS=$(timeout 30 nvidia-smi -L); then
  echo "gpu_check: nvidia-smi -L failed or took over 30 s: the driver is not working here"
  exit 1
fi
N=$(grep -c '^GPU ' <<<"$GPUS")

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

# dlbench verify on every GPU at both levels, each timed against its goal: quick <= 3 s (no
# load), full <= 20 s on one GPU and <= 1.3x that on N (the probes run in parallel). Each JSON
# holds its own breakdown ("timing"); goals.txt says met or missed, with the figures.
timed() {  # timed NAME COMMAND...: wall seconds of the command into $WORK/NAME.seconds
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$@"
  local code=$?
  awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { print a - b }' > "$WORK/$name.seconds"
  echo "$code" > "$WORK/$name.exit"
}
step "verify quick jax" 30 bash -o pipefail -c \
  "python3 -m bench verify --backend jax --level quick --no-imds --expect-gpus $N | tee $WORK/verify-quick.txt"
step "verify quick jax, timed" 30 bash -c \
  "$(declare -f timed); WORK=$WORK timed verify-quick python3 -m bench verify --backend jax --level quick --no-imds --expect-gpus $N --json > $WORK/verify-quick.json"
step "verify full jax, timed" 120 bash -c \
  "$(declare -f timed); WORK=$WORK timed verify-full python3 -m bench verify --backend jax --no-imds --expect-gpus $N --json > $WORK/verify-jax.json"
# A deliberately wrong count: the FAIL line a missing GPU gives, on real hardware (exit 1).
step "verify expecting one GPU too many" 30 bash -c \
  "python3 -m bench verify --backend jax --level quick --no-imds --expect-gpus $((N + 1)) > $WORK/verify-wrong-count.txt; echo \$? > $WORK/verify-wrong-count.exit"
python3 - "$WORK" "$N" <<'PY' | tee "$WORK/goals.txt"
import json
import sys
from pathlib import Path

work, gpus = Path(sys.argv[1]), int(sys.argv[2])
full_goal = 20.0 if gpus == 1 else 20.0 * 1.3
for name, goal in (("verify-quick", 3.0), ("verify-full", full_goal)):
    try:
        seconds = float((work / f"{name}.seconds").read_text())
        code = (work / f"{name}.exit").read_text().strip()
    except (OSError, ValueError) as error:
        print(f"{name}: not measured ({error})")
        continue
    verdict = "met" if seconds <= goal else "MISSED"
    print(f"{name} on {gpus} GPU(s): {seconds:.1f} s wall (goal <= {goal:.0f} s: {verdict}), exit {code}")
for path in ("verify-quick.json", "verify-jax.json"):
    try:
        document = json.loads((work / path).read_text())
    except (OSError, ValueError) as error:
        print(f"{path}: {error}")
        continue
    print(path, document["verdict"], document.get("signals"), json.dumps(document["timing"]))
wrong = work / "verify-wrong-count.txt"
if wrong.is_file():
    code = (work / "verify-wrong-count.exit").read_text().strip()
    lines = [line for line in wrong.read_text().splitlines() if " gpu count " in line]
    print(f"--expect-gpus {gpus + 1}: exit {code} (a FAIL is 1);", *lines)
PY
pack
step "setup.yml, GPU path" 100 env OUT="$WORK" bash bench/perf/gpu_setup_check.sh
step "performance" 310 env OUT="$WORK" LIMIT=290 bash bench/perf/gpu_perf_check.sh
