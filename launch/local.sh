#!/usr/bin/env bash
# Several hive.main processes on one machine, joined by jax.distributed.
#
#   launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS --config=configs/mtl.py --workdir=DIR [flags]
#
# Assumes: one machine; a free TCP port on localhost (HIVE_PORT, default random).
# With DEVICES_PER_PROCESS > 0 each process simulates that many CPU devices
# (XLA_FLAGS=--xla_force_host_platform_device_count; how hive tests multi-host
# code without a cluster). With DEVICES_PER_PROCESS = gpu, process i gets GPU i.
# Process 0 prints to stdout; process i > 0 logs to $HIVE_LOG_DIR/process-i.log
# (default: a temporary directory, printed). Exits non-zero if any process fails.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
processes=$1; devices=$2; shift 2
port=${HIVE_PORT:-$((20000 + RANDOM % 20000))}
logs=${HIVE_LOG_DIR:-$(mktemp -d -t hive-local-XXXX)}
mkdir -p "$logs"
python=${PYTHON:-python}
pids=()
for ((i = 0; i < processes; i++)); do
  if [ "$devices" = gpu ]; then
    env_vars=(CUDA_VISIBLE_DEVICES="$i")
  else
    env_vars=(JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$devices ${XLA_FLAGS:-}")
  fi
  cmd=(env "${env_vars[@]}" "$python" -m hive.main --coordinator="localhost:$port"
       --num_processes="$processes" --process_id="$i" "$@")
  if [ "$i" -eq 0 ]; then
    "${cmd[@]}" &
  else
    "${cmd[@]}" >"$logs/process-$i.log" 2>&1 &
  fi
  pids+=($!)
done
echo "launched $processes processes (port $port, logs in $logs)" >&2
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $logs/process-$i.log" >&2
    status=1
  fi
done
exit $status
