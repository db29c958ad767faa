#!/usr/bin/env bash
# One GPU call: BERT-base bf16 MLM step benchmark and checks (benchmarks/gpu_bench.py).
# Writes gpu_bench.json, gpu_bench.log and nvidia-smi.txt to $OUT (default ./gpu_out).
# Needs only jax[cuda], flax, optax, chex, numpy; bert_jax is taken from this checkout.
#
#     bash benchmarks/gpu.sh [extra gpu_bench.py flags, e.g. --scan or --remat dots]
#
# Budget, from an H200 run of an earlier version (jax 0.11.2: 340 s with 3 variants + checks +
# search): the embedding-gradient micro-benchmark (seconds), 6 timed variants (25-35 s compile
# each), a 3-step profile, three correctness checks (masking GPU vs CPU among them), then the
# max-batch search with whatever is left (often nothing: run it alone with
# `--variants --skip checks`).
# gpu_bench.py starts no stage after --budget_s 330 and `timeout` kills it at 360 s; the JSON
# is written after every stage. Start the machine with this call and give it back after.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Let the max-batch search see most of the card (jax preallocates 75% by default).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
PYTHON="${PYTHON:-python3}"

{ date -u; nvidia-smi || true; "$PYTHON" --version; } > "$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/nvidia-smi.txt"

timeout 360 "$PYTHON" benchmarks/gpu_bench.py --out "$OUT" "$@" 2>&1 | tee "$OUT/stdout.txt"
rc=${PIPESTATUS[0]}
echo "gpu_bench.py exit status $rc; results in $OUT" | tee -a "$OUT/stdout.txt"
exit "$rc"
