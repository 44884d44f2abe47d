#!/usr/bin/env bash
# Same numbers before and after a refactor: runs a small lifecycle (TF-IDF and a short MiniLM recipe on 600
# rows of the MR sample: splits, 3-fold backtests, hold-out estimates, final models, predictions with the ONNX
# export and with torch, compare-models) on BASE_REF and on the working tree, one after the other on this
# machine, and compares fold predictions, metrics, fold identities and prediction files byte for byte.
# With AFTER_REF, that commit instead of the working tree (then the tree can change while it runs).
#   bash bench/lifecycle_equivalence.sh c52d5bf [HEAD]
set -euo pipefail
base_ref=${1:?usage: bench/lifecycle_equivalence.sh BASE_REF [AFTER_REF]}
after_ref=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
work=$(mktemp -d)
trap 'for t in base after; do git -C "$here" worktree remove --force "$work/$t" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT
git -C "$here" worktree add --detach "$work/base" "$base_ref" >/dev/null
after_tree=$here
if [ -n "$after_ref" ]; then
  git -C "$here" worktree add --detach "$work/after" "$after_ref" >/dev/null
  after_tree=$work/after
fi

lifecycle() {  # lifecycle CHECKOUT OUT
  local src=$1 out=$2
  mkdir -p "$out"
  (
    cd "$src"
    export MLOPS_ARTIFACTS_DIR="$out/artifacts"
    cli() { "$python" main.py "$@" || { echo "FAILED: cli $*"; exit 1; }; }
    "$python" -c "import pandas as pd; pd.read_csv('data/sample/mr_sample.csv').sample(600, random_state=0).to_csv('$out/data.csv', index=False)"
    sed 's/"train_steps": [0-9][0-9]*,/"train_steps": 40,/; s/"epochs": [0-9][0-9]*,/"epochs": 2,/' model_configs/minilm.json > "$out/minilm_small.json"
    cli generate-splits --experiment-id eq --input-file "$out/data.csv" --cv-folds 3
    cli run-backtesting --experiment-id eq --model-config-name tfidf_logreg --model-config-name "$out/minilm_small.json"
    for model in tfidf_logreg "$out/minilm_small.json"; do
      cli estimate-performance --experiment-id eq --model-config-name "$model"
      cli train-final-model --experiment-id eq --model-config-name "$model"
    done
    cli compare-models --experiment-id eq --format json > "$out/compare.json"
    cli compare-models --experiment-id eq --run-type performance_estimation --format json > "$out/compare_est.json"
    for name in tfidf_logreg minilm_small; do
      model="$out/artifacts/experiments/eq/runs/$name/final_model"
      cli predict-new --model-path "$model" --input-file data/sample/new_reviews.csv --output-file "$out/pred_$name.csv"
      cli predict-new --model-path "$model" --input-file data/sample/new_reviews.csv --runtime torch \
        --output-file "$out/predtorch_$name.csv"
    done
  ) > "$out/log.txt" 2>&1 || { echo "the lifecycle failed in $src:"; tail -30 "$out/log.txt"; return 1; }
}

echo "base $base_ref ($(git -C "$here" rev-parse --short "$base_ref")) ..."
time lifecycle "$work/base" "$work/before"
echo "after: ${after_ref:-the working tree} ($(git -C "$here" rev-parse --short "${after_ref:-HEAD}")) ..."
time lifecycle "$after_tree" "$work/after_run"
"$python" - "$work/before" "$work/after_run" <<'PY'
import filecmp, json, sys
from pathlib import Path
before, after = map(Path, sys.argv[1:])
same = True
for name in ["compare.json", "compare_est.json", *[f"{k}_{m}.csv" for k in ("pred", "predtorch") for m in ("tfidf_logreg", "minilm_small")]]:
    ok = filecmp.cmp(before / name, after / name, shallow=False)
    same &= ok
    print(("identical " if ok else "DIFFERENT ") + name)
runs = sorted((before / "artifacts/experiments/eq/runs").rglob("metrics.json"))
for path in runs:
    twin = after / path.relative_to(before)
    a, b = json.loads(path.read_text()), json.loads(twin.read_text())
    ok = a["metrics"] == b["metrics"] and a["identity"] == b["identity"]
    pred, twin_pred = path.with_name("predictions.csv"), twin.with_name("predictions.csv")
    ok &= filecmp.cmp(pred, twin_pred, shallow=False)
    same &= ok
    print(("identical " if ok else "DIFFERENT ") + str(path.parent.relative_to(before / "artifacts/experiments/eq/runs")))
print("SAME NUMBERS" if same else "NUMBERS CHANGED")
sys.exit(0 if same else 1)
PY
