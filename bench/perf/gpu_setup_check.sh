#!/usr/bin/env bash
# setup.yml on a GPU machine over a local connection, limited to what needs no download:
# preflight (OS, Python, GPU, driver), the driver and CUDA roles (which leave a working driver
# and the wheels' CUDA alone) and verify (nvidia-smi, the backend's devices, dlbench verify and
# a short synthetic run) in a venv made from the Python packages the machine already has.
# keras_env and jupyter are skipped: they install from the package index.
#
# bench/perf/gpu_check.sh calls it; alone: OUT=/tmp/out bash bench/perf/gpu_setup_check.sh
# Needs ansible-core: installed, or as a wheel in .whl/ (gpu_check.sh's carried wheels).
# DLSTATION_SETUP_VENV: use that venv (with Keras, a backend and dlstation) instead of making one.
# DLSTATION_SETUP_BACKEND: the backend verify runs (default jax).
set -uo pipefail
OUT="${OUT:-gpu-check-out}"
WORK=/tmp/dlstation-setup-check
BACKEND="${DLSTATION_SETUP_BACKEND:-jax}"
mkdir -p "$OUT" "$WORK/root/results"
LOG="$OUT/setup-check.log"

{
  echo "== setup.yml on this machine, local connection, nothing downloaded $(date -u +%FT%TZ)"
  grep -E '^(PRETTY_NAME)=' /etc/os-release
  /usr/bin/python3 --version

  if command -v ansible-playbook >/dev/null; then
    PLAYBOOK=(ansible-playbook)
  elif compgen -G ".whl/ansible_core-*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/ansible" \
      .whl/ansible_core-*.whl || exit 1
    export PYTHONPATH="$WORK/ansible${PYTHONPATH:+:$PYTHONPATH}"
    PLAYBOOK=(python3 -m ansible playbook)
  else
    echo "ansible-core is neither installed nor carried as a wheel in .whl/: skipped"
    exit 0
  fi

  # verify runs dlbench from the venv: the machine's own backend packages plus dlstation.
  VENV="${DLSTATION_SETUP_VENV:-$WORK/venv}"
  if [ ! -x "$VENV/bin/dlbench" ]; then
    python3 -m venv --system-site-packages "$VENV" || exit 1
    "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation . || exit 1
  fi

  # Tags: preflight runs always; the driver and CUDA roles decide for themselves (a working
  # driver is left alone); verify depends on keras_env, so keras_env is skipped explicitly.
  "${PLAYBOOK[@]}" setup.yml \
    --tags preflight,nvidia_driver,cuda,verify --skip-tags keras_env,jupyter \
    -e "{\"keras_env_venv\": \"$VENV\", \"keras_env_root\": \"$WORK/root\"}" \
    -e "{\"keras_env_backends\": [\"$BACKEND\"], \"verify_fetch_dir\": \"$OUT/setup-verify\"}"
  echo "== setup.yml: exit $? $(date -u +%FT%TZ)"
} 2>&1 | tee "$LOG"
grep -A2 "PLAY RECAP" "$LOG"
