#!/usr/bin/env bash
# Reproduces docs/RESULTS.md (issue 7: what MLM pretraining buys at small scale).
#
#   bash scripts/reproduce_results.sh                       # everything, 60 min pretraining
#   PRETRAIN_MINUTES=60 MODEL=small bash scripts/reproduce_results.sh
#   STAGES="bow similarity" bash scripts/reproduce_results.sh   # only some stages
#   DRY_RUN=1 bash scripts/reproduce_results.sh                  # print the commands only
#
# Stages, in order (all outputs under $W, default workdirs/results):
#   pretrain    1. MLM pretraining on the IMDB reviews for a CPU budget of PRETRAIN_MINUTES of
#                  training steps: num_train_steps = budget x measured steps/s (a 25-step
#                  probe run; set STEPS_PER_SEC or PRETRAIN_STEPS to skip it). Held-out
#                  evaluation (the whole validation split) 10 times along the way; the curve
#                  goes to $DOCS/figures/mlm_curve.{png,csv}.
#   finetune    2. Rotten Tomatoes, each of SEEDS: (a) from all-MiniLM-L6-v2, (b) from our
#                  pretrained checkpoint, (c) random init with (b)'s architecture.
#   trend       3. seed 0 fine-tuned from the pretraining checkpoints at 20/40/60/80%.
#   bow         2d. tf-idf (1-2 gram) + logistic regression, C tuned on a validation slice.
#   similarity  4. contextual vs static vectors of "bank" / "apple" with MiniLM.
#   fillmask    5. fill-mask with our pretrained MLM.
#   aggregate   the mean +- std table -> $DOCS/RESULTS_table.md.
# Finished runs (an eval_results.json in their workdir) are skipped; an interrupted run
# resumes from its last checkpoint when the script is started again.
#
# MODEL=tiny: experiments/pretrain_tiny.py (2 layers, hidden 128, 8,192 pieces, 1.5 M
# parameters; the recipe of docs/RESULTS.md section 8); MODEL=small: 4 layers, hidden 256.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
W=${W:-workdirs/results}
DOCS=${DOCS:-docs}  # where the curve and the table land
PRETRAIN_MINUTES=${PRETRAIN_MINUTES:-60}
SEEDS=${SEEDS:-"0 1 2"}
# Extra overrides for every fine-tuning run, e.g. one epoch on a busy machine:
#   FT_ARGS="--config.num_train_steps=216 --config.eval_every_steps=216"   (packed rows)
# The tables in docs/RESULTS.md were measured before packing, with padded rows:
#   FT_ARGS="--config.data.packing=false --config.batch_size=32 --config.num_train_steps=233
#            --config.eval_every_steps=233 --config.optimizer.warmup_steps=23"
read -r -a FT_EXTRA <<< "${FT_ARGS:-}"
# ... and for one model only, e.g. the learning rate each model chose on a validation slice
# of train (docs/RESULTS.md section 2): FT_ARGS_OURS="--config.optimizer.learning_rate=1e-3"
read -r -a OURS_EXTRA <<< "${FT_ARGS_OURS:-}"
read -r -a RANDOM_EXTRA <<< "${FT_ARGS_RANDOM:-}"
read -r -a MINILM_EXTRA <<< "${FT_ARGS_MINILM:-}"
FT_MODELS=${FT_MODELS:-"minilm ours random"}
MODEL=${MODEL:-tiny}
STAGES=${STAGES:-"pretrain finetune trend bow similarity fillmask aggregate"}

# (c) random init states (b)'s architecture, vocabulary included (pretrain_tiny's 8,192 pieces).
VOCAB=(--config.data.vocab_file=experiments/vocab/imdb_8k.txt)
case "$MODEL" in
  tiny)  ARCH=("${VOCAB[@]}") ;;
  small) ARCH=("${VOCAB[@]}" --config.model.hidden_size=256 --config.model.num_hidden_layers=4
               --config.model.num_attention_heads=4 --config.model.intermediate_size=1024) ;;
  *) echo "MODEL must be tiny or small, got $MODEL" >&2; exit 2 ;;
esac

run() {  # echo, then run unless DRY_RUN
  echo "+ $*"
  if [[ -z "${DRY_RUN:-}" ]]; then "$@"; fi
}
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
done_in() { [[ -f "$1/eval_results.json" ]] && echo "= $1 is finished, skipping"; }
mkdir -p "$W"

# ----------------------------------------------------------------------------- 1. pretrain
if has_stage pretrain && ! done_in "$W/pretrain"; then
  STEPS=${PRETRAIN_STEPS:-}
  if [[ -z "$STEPS" ]]; then
    SPS=${STEPS_PER_SEC:-}
    if [[ -z "$SPS" && -n "${DRY_RUN:-}" ]]; then SPS=1.0; fi  # a placeholder for printing
    if [[ -z "$SPS" ]]; then
      # Probe: 25 steps; steps/s from the log windows after the first (compiling) one.
      rm -rf "$W/_probe"
      run "$PY" -m bert_jax.main --config=experiments/pretrain_tiny.py --workdir="$W/_probe" \
        "${ARCH[@]}" --config.num_train_steps=25 --config.log_every_steps=5 \
        --config.eval_every_steps=1000 --config.checkpoint_every_steps=1000
      SPS=$("$PY" - "$W/_probe/metrics.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rates = [r["steps_per_sec"] for r in rows if r.get("split") == "train"][1:]
print(f"{statistics.median(rates):.4f}")
EOF
)
      rm -rf "$W/_probe"
    fi
    STEPS=$("$PY" -c "print(max(100, int($PRETRAIN_MINUTES * 60 * $SPS)))")
    echo "= $SPS steps/s x $PRETRAIN_MINUTES min -> $STEPS pretraining steps"
  fi
  EVERY=$(( STEPS / 10 > 0 ? STEPS / 10 : 1 ))
  run "$PY" -m bert_jax.main --config=experiments/pretrain_tiny.py --workdir="$W/pretrain" \
    "${ARCH[@]}" --config.num_train_steps="$STEPS" \
    --config.optimizer.warmup_steps=$(( STEPS / 20 + 1 )) \
    --config.eval_every_steps="$EVERY" --config.checkpoint_every_steps="$EVERY" \
    --config.num_eval_batches=-1 --config.log_every_steps=20 --config.keep_checkpoints=10
fi
if has_stage pretrain && [[ -f "$W/pretrain/metrics.jsonl" ]]; then
  run "$PY" scripts/plot_curves.py "$W/pretrain" --out_dir "$DOCS/figures"
fi

# ----------------------------------------------------------------------------- 2. fine-tune
FT=experiments/finetune_rotten_tomatoes.py
if has_stage finetune; then
  for s in $SEEDS; do
    [[ " $FT_MODELS " == *" minilm "* ]] && { done_in "$W/rt_minilm_s$s" || run "$PY" \
      -m bert_jax.main --config=$FT --workdir="$W/rt_minilm_s$s" --config.seed="$s" \
      "${FT_EXTRA[@]}" "${MINILM_EXTRA[@]}"; }
    [[ " $FT_MODELS " == *" ours "* ]] && { done_in "$W/rt_ours_s$s" || run "$PY" \
      -m bert_jax.main --config=$FT:scratch --workdir="$W/rt_ours_s$s" --config.seed="$s" \
      --config.init_from="$W/pretrain" "${FT_EXTRA[@]}" "${OURS_EXTRA[@]}"; }
    # The architecture of (b) comes from its checkpoint; (c) states the same one.
    [[ " $FT_MODELS " == *" random "* ]] && { done_in "$W/rt_random_s$s" || run "$PY" \
      -m bert_jax.main --config=$FT:scratch --workdir="$W/rt_random_s$s" --config.seed="$s" \
      "${ARCH[@]}" "${FT_EXTRA[@]}" "${RANDOM_EXTRA[@]}"; }
  done
fi
# ------------------------------------------------------- 3. accuracy against pretraining time
# Seed 0 fine-tuned from the checkpoints at 20%, 40%, 60% and 80% of pretraining (the final
# one is rt_ours_s0); the table lands in RESULTS_table.md.
if has_stage trend && [[ -d "$W/pretrain/checkpoints" ]]; then
  STEPS_DONE=$(ls "$W/pretrain/checkpoints" | grep -E '^[0-9]+$' | sort -n)
  N=$(echo "$STEPS_DONE" | wc -l)
  for i in 2 4 6 8; do
    (( N >= 10 )) || break
    step=$(echo "$STEPS_DONE" | sed -n "${i}p")
    done_in "$W/rt_trend_$step" || run "$PY" -m bert_jax.main --config=$FT:scratch \
      --workdir="$W/rt_trend_$step" --config.seed=0 \
      --config.init_from="$W/pretrain/checkpoints/$step" "${FT_EXTRA[@]}" "${OURS_EXTRA[@]}"
  done
fi
if has_stage bow; then
  # shellcheck disable=SC2086
  run "$PY" scripts/bow_baseline.py --workdir "$W/rt_bow" --seeds $SEEDS
fi

# ----------------------------------------------------------------------------- 4. similarity
if has_stage similarity; then
  run "$PY" scripts/contextual_similarity.py --out_dir "$W/contextual_similarity"
fi

# ----------------------------------------------------------------------------- 5. fill-mask
if has_stage fillmask; then
  echo "+ $PY -m bert_jax.fill_mask --checkpoint $W/pretrain ... > $W/fill_mask.txt"
  if [[ -z "${DRY_RUN:-}" ]]; then
    "$PY" -m bert_jax.fill_mask --checkpoint "$W/pretrain" --top_k 5 \
      "I love [MASK] language processing." \
      "This movie was [MASK]." \
      "The [MASK] was great, but the plot made no sense." \
      "I have never seen a worse [MASK] in my life." \
      "The actors did a [MASK] job with a weak script." \
      "One of the best [MASK] of the year." \
      "I laughed so hard I [MASK]." | tee "$W/fill_mask.txt"
  fi
fi

# ----------------------------------------------------------------------------- table
if has_stage aggregate; then
  run "$PY" scripts/aggregate_results.py --results_dir "$W" --out "$DOCS/RESULTS_table.md"
fi
