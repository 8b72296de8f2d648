#!/bin/bash
# Every GPU measurement of BENCHMARKS.md in one run, for a machine lent for minutes:
# the service end to end (#11), Ray against the single process (#12), the network's
# variants and batch sweeps (#14), then torch.compile with whatever time is left.
#
#   bash tools/gpu_all.sh             # on the GPU machine, from the repository root
#   DRY=1 bash tools/gpu_all.sh       # small sizes on a CPU: checks every script
#
# Wheels in .whl/ (what the machine's Python lacks: see docs/development.md) are installed
# into /tmp/site first. Results go to $OUT (default ./out); BUDGET_S (default 560) bounds the whole run.
set -u
OUT=${OUT:-out}
BUDGET_S=${BUDGET_S:-560}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - start))); }

if compgen -G ".whl/*.whl" >/dev/null && [ "${DRY:-}" != 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null

timeout 200 python3 tools/gpu_e2e.py 2>&1 | tee "$OUT/gpu_e2e.log"
DEADLINE_S=150 timeout 240 python3 tools/gpu_ray.py 2>&1 | tee "$OUT/gpu_ray.log"
DEADLINE_S=$(( $(left) - 60 )) KNOWN=0 COMPILE=${COMPILE-RMBG-1.4,RMBG-2.0} \
    timeout "$(left)" python3 tools/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
echo "done in $(( $(date +%s) - start )) s"
