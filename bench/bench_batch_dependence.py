"""How much a text's predicted probabilities depend on the other texts scored with it: each text scored alone
against all of them in one call (the model's own batching), per runtime of a model folder.

    uv run python bench/bench_batch_dependence.py --model-path artifacts/experiments/quickstart/runs/minilm/final_model

An int8 ONNX export quantizes activations per batch (dynamic per-tensor scales), so its probabilities move with
the batch; the torch model and an fp32 export should not. Prints, per runtime: the mean and largest absolute
probability difference and how many labels differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--data-file", type=Path, default=ROOT / "data" / "sample" / "new_reviews.csv")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--runtimes", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from mlops.core.model_folder import load_model
    from mlops.core.text_dataset import TextDataset

    texts = pd.read_csv(args.data_file)[args.text_column].astype(str).tolist()
    for runtime in args.runtimes:
        model = load_model(args.model_path, runtime=runtime).model
        together = np.asarray(model.predict_proba(TextDataset(texts=texts)))
        alone = np.vstack([np.asarray(model.predict_proba(TextDataset(texts=[text]))) for text in texts])
        diff = np.abs(together - alone)
        changed = int((together.argmax(axis=1) != alone.argmax(axis=1)).sum())
        print(f"{runtime}: {len(texts)} texts, |probability difference| mean {diff.mean():.4f}, max {diff.max():.4f}; "
              f"{changed} labels differ")


if __name__ == "__main__":
    main()
