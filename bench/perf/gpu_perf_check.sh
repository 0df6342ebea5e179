#!/usr/bin/env bash
# The performance check for a lent GPU machine, in about 6 minutes: the modes benchmark on the
# real data with warm caches (fit and compiled, both workloads, the text's 20 epochs), and the
# compiled mode again with each opt-in change and with the frameworks' own GPU memory handling,
# ratios printed in one table. gpu_check.sh calls it; alone:
#   bash bench/perf/gpu_perf_check.sh            (the data in $DLSTATION_DATA_DIR or .data/)
#   EPOCHS=2 WORKLOADS=reuters bash bench/perf/gpu_perf_check.sh   (a dry run, any machine)
# Results land in /tmp/gpu-perf-check, packed into $OUT/gpu-perf-check.tar.gz at the end and
# whenever the time limit stops the benchmark; the log is $OUT/perf-log.txt.
set -uo pipefail
OUT="${OUT:-gpu-check-out}"
WORK=/tmp/gpu-perf-check
LIMIT="${LIMIT:-360}"
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/perf-log.txt") 2>&1
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
DATA="${DLSTATION_DATA_DIR:-$PWD/.data}"
data_args=()  # no data folder: synthetic data (throughput only)
[ -d "$DATA" ] && data_args=(--data-dir "$DATA")

echo "== gpu perf check $(date -u +%FT%TZ), limit ${LIMIT}s"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv
# shellcheck disable=SC2086  # WORKLOADS is a list of words
timeout "$LIMIT" python3 -m bench.perf.modes --backend jax --quick --changes \
  --epochs "${EPOCHS:-20}" --workloads ${WORKLOADS:-imdb reuters} "${data_args[@]}" \
  --keep "$WORK/runs" | tee "$WORK/modes-changes.txt"
echo "== gpu perf check: exit ${PIPESTATUS[0]} $(date -u +%FT%TZ)"
tar czf "$OUT/gpu-perf-check.tar.gz" -C /tmp gpu-perf-check
