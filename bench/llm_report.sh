#!/usr/bin/env bash
# Issue-4 figures through the real CLI: LLM classifiers next to the TF-IDF baseline on the MR sample,
# and synthetic-data generation speed and label agreement with a classifier trained on that sample.
#   bash bench/llm_report.sh            (about 25 minutes on 2 CPU cores; the first run also builds the
#                                        Gemma safetensors cache, about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
export MLOPS_ARTIFACTS_DIR="${MLOPS_ARTIFACTS_DIR:-artifacts/bench_llm}"
cli() { uv run cli "$@"; }

# One train-val split of the sample; each model trains on the train-val part (the SFT config caps it at
# 400 rows) and is scored once on the same 600-row hold-out.
cli generate-splits --experiment-id llm_compare --input-file data/sample/mr_sample.csv --backtesting-strategy train-val --force
for model in tfidf_logreg gemma270m_prompt gemma270m_sft; do
  /usr/bin/time -f "$model estimate-performance: %e s wall" uv run cli estimate-performance \
    --experiment-id llm_compare --model-config-name "$model" --force
done
cli compare-models --experiment-id llm_compare --run-type performance_estimation

# The verifier: TF-IDF trained on the whole sample.
cli train-final-model --experiment-id llm_compare --model-config-name tfidf_logreg --force
verifier="$MLOPS_ARTIFACTS_DIR/experiments/llm_compare/runs/tfidf_logreg/final_model"
cli data-generate --name gemma_en --examples-per-sentiment 20 --labels negative --labels positive \
    --verify-with "$verifier" --force
cli data-generate --name gemma_en_filtered --examples-per-sentiment 20 --labels negative --labels positive \
    --verify-with "$verifier" --filter-disagreeing --force
