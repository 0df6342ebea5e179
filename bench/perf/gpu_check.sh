#!/usr/bin/env bash
# The GPU checks the issues ask for, as one script for a lent GPU machine (see the device
# tool's README): dlbench verify, both workloads in both modes on the real data, and the modes
# benchmark. Results land in $OUT (default ./gpu-check) with the card, date and versions in
# every file; commit the result files that matter under bench/reference/.
#
# On the device machine, with Keras and TensorFlow carried as wheels in .whl/ and the data in
# .data/ (carry both):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD bash bench/perf/gpu_check.sh
set -uo pipefail
OUT="${OUT:-gpu-check}"
DATA="${DLSTATION_DATA_DIR:-.data}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
for backend in jax tensorflow; do
  timeout 300 python3 -m bench verify --backend "$backend" --expect-gpu --json > "$OUT/verify-$backend.json"
  echo "verify $backend: exit $?"
done
timeout 600 python3 -m bench run --backend jax --mode fit --data-dir "$DATA" --output "$OUT/ref-jax-fit.json" --quiet
timeout 600 python3 -m bench run --backend jax --mode compiled --data-dir "$DATA" --output "$OUT/ref-jax-compiled.json" --quiet
timeout 900 python3 -m bench.perf.modes --data-dir "$DATA" | tee "$OUT/modes.txt"
timeout 300 python3 -m bench.perf.sampler_overhead --repeats 3 | tee "$OUT/sampler.txt"
