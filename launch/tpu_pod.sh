#!/usr/bin/env bash
# A Cloud TPU VM pod slice: the same command on every worker.
#
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/mtl.py --workdir=gs://bucket/runs/mtl
#
# Assumes: an existing TPU VM slice (e.g. v4-32) and the gcloud CLI; the repo
# cloned at ~/hive on every worker with `pip install -r requirements.txt -e .`
# and `pip install "jax[tpu]"` done (e.g. with this script's setup step:
# HIVE_SETUP=1); the workdir and data_dir on a bucket or a filesystem all
# workers share. jax.distributed detects the TPU pod itself: no addresses.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,10p' "$0"; exit 2
fi
tpu=$1; zone=$2; shift 2
args=$(printf ' %q' "$@")
if [ "${HIVE_SETUP:-0}" = 1 ]; then
  gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
    "cd ~/hive && pip install -r requirements.txt -e . && pip install 'jax[tpu]'"
fi
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/hive && python -m hive.main$args"
