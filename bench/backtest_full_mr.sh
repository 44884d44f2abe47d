#!/usr/bin/env bash
# 5-fold MiniLM backtest on the full MR set (10,605 sentences), with the wall time and the per-stage
# breakdown that run.json records (load, train incl. per-batch tokenization, predict, write).
#   bash bench/backtest_full_mr.sh      (about 15-20 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export MLOPS_ARTIFACTS_DIR="${MLOPS_ARTIFACTS_DIR:-artifacts/bench_backtest}"
uv run cli generate-splits --experiment-id mr_full --input-file data/mr/mr_full.csv --cv-folds 5 --force
start=$(date +%s)
uv run cli run-backtesting --experiment-id mr_full --model-config-name minilm --force
echo "wall time: $(( $(date +%s) - start )) s"
uv run python - <<'PY'
import json, os
from pathlib import Path
run = Path(os.environ["MLOPS_ARTIFACTS_DIR"]) / "experiments/mr_full/runs/minilm/backtesting"
timings = json.loads((run / "run.json").read_text())["timings_this_invocation"]
print("stages (s):", {k: round(v, 1) for k, v in timings.items()})
for k in range(5):
    record = json.loads((run / f"fold_{k}" / "metrics.json").read_text())
    history = record["runtime"].get("history", [])
    print(f"fold {k}: accuracy {record['metrics']['accuracy']:.4f}, train {record['timings']['train_s']:.0f} s, "
          f"predict {record['timings']['predict_s']:.1f} s, epochs {len(history)}, "
          f"best epoch {record['runtime'].get('best_epoch')}, precision {record['runtime'].get('precision')}")
PY
