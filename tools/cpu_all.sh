#!/bin/bash
# Every CPU measurement issue #15 asks for, in one run, for a CPU kind not measured yet (an
# AVX2-only one, say): what the CPU is, the engine table of each model, the ratio to the
# project's first networks (the stand-in for upstream's code) and the GEMM libraries' rates.
#
#   bash tools/cpu_all.sh 2>&1 | tee cpu_all.log    # about an hour on 2 cores, nothing else running
#   DRY=1 bash tools/cpu_all.sh                      # small sizes: checks every step
#
# Synthetic weights, offline. BENCHMARKS.md ("CPU engines", "Against the original networks")
# holds the figures of the CPUs measured so far, for comparison.
set -u
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ "${DRY:-}" = 1 ]; then size=(--size 64); runs=1; else size=(); runs=3; fi

lscpu | grep -E "^(Model name|CPU\(s\)|Flags)"
python -c "import torch; print('torch', torch.__version__, 'capability', torch.backends.cpu.get_cpu_capability())"
for model in RMBG-2.0 BiRefNet_lite RMBG-1.4; do
    echo "== engines, $model, load $(cut -d' ' -f1 /proc/loadavg)"
    python rmbg.py bench --engines --synthetic --model "$model" "${size[@]}" --runs "$runs"
done
for model in RMBG-2.0 BiRefNet_lite; do
    echo "== against the original networks, $model, load $(cut -d' ' -f1 /proc/loadavg)"
    python tools/original_ratio.py "$model"
done
echo "== float32 linear layers, oneMKL against oneDNN"
python tools/cpu_gemm.py
