#!/usr/bin/env bash
# One call on a lent GPU machine (device tool): CUDA correctness, then speed. Run from the repo root
# with data/processed and .whl carried: wheels, for the machine's python, of what its image lacks
# (jsonschema and its deps; cvxpy and its solvers, which tests/reference.py imports). Writes to $OUT.
#   1. the batched engine on CUDA equals the per-client CPU reference (tests/test_engine_reference.py)
#   2. a whole 100-round ml-100k fedem run through the CLI (wall time, selected metrics)
#   3. benchmarks/bench_round.py on every dataset x method (seconds per round, peak memory)
set -o pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
export PYTHONUNBUFFERED=1 FEDEM_DATA_MIRROR=
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
echo "== 1. engine on CUDA vs per-client reference"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_engine_reference.py -k cuda 2>&1 | tee "$OUT/pytest_cuda.log" | tail -4
echo "== 2. 100-round ml-100k fedem run (CLI, cuda)"
start=$SECONDS
timeout 200 python3 -m fedem train --dataset ml-100k --method fedem --seed 0 --quiet \
  --set training.device=cuda --out "$OUT/ml-100k_fedem_seed0_cuda.json" 2>&1 | tail -3
echo "wall_s $((SECONDS - start))"
python3 - "$OUT/ml-100k_fedem_seed0_cuda" <<'PY'
import json, statistics, sys
r, t = (json.load(open(f"{sys.argv[1]}{ext}")) for ext in (".json", ".timing.json"))
s = t["round_seconds"]
print("median round s", round(statistics.median(s), 4), "sum", round(sum(s), 2), "wall", t.get("wall_seconds"),
      "selected round", r["selected"]["round"], "test", r["selected"]["test"])
PY
echo "== 3. per-round benchmark (cuda)"
timeout 300 python3 benchmarks/bench_round.py --datasets ml-100k filmtrust amazon-video lastfm-2k \
  --methods fedem fedmf local neg-count --rounds 5 --json "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.log"
