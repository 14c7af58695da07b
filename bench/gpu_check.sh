#!/usr/bin/env bash
# The GPU halves of issues #8 and #20, prepared for a machine with an NVIDIA GPU (not
# yet run):
# profile Llama-3.2-1B on the local GPU (eager and with CUDA graphs), then replay
# Azure conversation requests on it, compare with the simulator, and calibrate on it.
# Usage: bash bench/gpu_check.sh OUTDIR   (about 9-11 minutes on an H200)
# On a machine without simpy/pydantic, install dcsim's dependencies first
# (`pip install -e ".[gpu]"`, or wheels carried in .whl: see the device notes).
set -euo pipefail
out="${1:?output folder}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
dcsim() { python3 -m dcsim "$@"; }
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.sm --format=csv | tee "$out/nvidia-smi.csv"
# eager timing matches the replay loop; the graph run matches the shipped H200 method
dcsim profile --model llama-3.2-1b --grid standard --phases prefill,decode --no-graphs \
    --min-time-s 0.3 --budget-s 150 --out "$out/eager" -q
dcsim profile --model llama-3.2-1b --grid quick --min-time-s 0.3 --budget-s 90 \
    --out "$out/graphs" -q
dcsim profile replay --profile "$out/eager" --requests 400 --max-num-seqs 64 \
    --max-batched-tokens 8192 --out "$out/eager/replay"
# the same requests under SGLang/TGI-style prefill-only iterations (issue #16)
dcsim profile replay --profile "$out/eager" --requests 400 --max-num-seqs 64 \
    --max-batched-tokens 8192 --scheduler prefill_first --out "$out/eager/replay-prefill-first"
# issue #20: calibrate on the eager replay (its measured energy too) and hold out the
# same requests at twice the load
dcsim profile replay --profile "$out/eager" --requests 400 --time-scale 0.5 --max-num-seqs 64 \
    --max-batched-tokens 8192 --out "$out/eager/replay-busy"
energy() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['energy_j'])" "$1"; }
dcsim calibrate "$out/eager/replay/scenario.yaml" \
    --requests "$out/eager/replay/real_requests.csv" \
    --energy-j "$(energy "$out/eager/replay/replay.json")" \
    --holdout "$out/eager/replay-busy/real_requests.csv" \
    --holdout-energy-j "$(energy "$out/eager/replay-busy/replay.json")" \
    --out "$out/eager/calibrated"
