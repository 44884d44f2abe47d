"""How many inserted near-copies do the near-duplicate passes find, how many other pairs do they add, and how
long do they take? Run alone: it reports wall time and peak memory.

    uv run python bench/bench_near_duplicates.py                       # 10k, 100k, 1M rows; MinHash; embedding at 10k
    uv run python bench/bench_near_duplicates.py --sizes 10000 --embedding-sizes 10000

Rows: the 10,605 real MR sentences; beyond that, texts made of the first half of one MR sentence and the second
half of another (seeded). 1% of the rows (at most 2,000) get a near-copy appended: case changed, punctuation
changed, and one or two words replaced or dropped. Each size runs in a fresh process (peak RSS is its own).
Found = inserted pairs among the pairs reported; other pairs are checked with the exact shingle Jaccard
(``real`` if it reaches the threshold - 0.1: the data's own near-duplicates; else ``false``).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_rows(n: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int, int]]]:
    """``n`` base texts plus near-copies; returns texts and (original, copy, words edited)."""
    import pandas as pd

    mr = pd.read_csv(ROOT / "data" / "mr" / "mr_full.csv")["text"].tolist()
    rng = np.random.default_rng(seed)
    texts = list(mr[:n])
    while len(texts) < n:
        a, b = rng.integers(0, len(mr), 2)
        wa, wb = mr[a].split(), mr[b].split()
        texts.append(" ".join(wa[: len(wa) // 2] + wb[len(wb) // 2:]))
    vocabulary = [w for t in mr[:2000] for w in t.split() if w.isalpha()]
    pairs = []
    for i in rng.choice(n, min(2000, max(1, n // 100)), replace=False):
        words = texts[i].split()
        edits = int(rng.integers(1, 3))
        for _ in range(edits):
            j = int(rng.integers(0, len(words)))
            if rng.random() < 0.5 and len(words) > 3:
                del words[j]
            else:
                words[j] = str(rng.choice(vocabulary))
        copy = " ".join(words)
        copy = copy.upper() if rng.random() < 0.5 else copy.lower()
        copy = re.sub(r"[.,!?;:]", lambda m: rng.choice(["", "!", ".", " ,"]), copy)
        texts.append(copy)
        pairs.append((int(i), len(texts) - 1, edits))
    return texts, pairs


def exact_jaccard(a: str, b: str) -> float:
    from mlops.data.near_duplicates import SHINGLE_CHARS, shingle_form

    def shingles(text: str) -> set[str]:
        form = shingle_form(text)
        return {form[i:i + SHINGLE_CHARS] for i in range(max(1, len(form) - SHINGLE_CHARS + 1))}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def one(n: int, method: str, threshold: float) -> dict:
    from mlops.data import near_duplicates as nd

    texts, inserted = make_rows(n)
    started = time.perf_counter()
    if method == "minhash":
        found = nd.minhash_pairs(texts, threshold=threshold)
    else:
        from mlops.experiments.service import embed_texts

        found = nd.embedding_pairs(embed_texts(texts), threshold=threshold)
    elapsed = time.perf_counter() - started
    reported = set(zip(found.first.tolist(), found.second.tolist(), strict=True))
    truth = {(a, b) for a, b, _ in inserted}
    by_edits = {e: [(a, b) in reported for a, b, k in inserted if k == e] for e in (1, 2)}
    others = reported - truth
    sample = list(others)[:2000]
    real = sum(exact_jaccard(texts[a], texts[b]) >= (threshold - 0.1 if method == "minhash" else 0.6)
               for a, b in sample)
    return {"rows": len(texts), "method": method, "threshold": threshold, "seconds": round(elapsed, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "inserted": len(truth), "found": len(truth & reported), "recall": len(truth & reported) / len(truth),
            "recall_1_word": float(np.mean(by_edits[1])), "recall_2_words": float(np.mean(by_edits[2])),
            "other_pairs": len(others), "other_checked": len(sample), "other_real": int(real),
            "other_false": len(sample) - int(real)}


def split_cost(n: int) -> dict:
    """generate-splits' planning at ``n`` rows: exact-duplicate groups only vs with MinHash near-duplicates."""
    from mlops.data import near_duplicates as nd
    from mlops.data.splitting import SplitParameters, build_split_plan, leakage_groups

    texts, _ = make_rows(n)
    y = np.array([i % 2 for i in range(len(texts))])
    params = SplitParameters(cv_folds=5, seed=42)
    offs = []
    for _ in range(2):  # the first run pays for imports and caches: the faster of two
        started = time.perf_counter()
        build_split_plan(y, leakage_groups(texts), params)
        offs.append(time.perf_counter() - started)
    off = min(offs)
    started = time.perf_counter()
    pairs = nd.minhash_pairs(texts)
    build_split_plan(y, leakage_groups(texts, linked_pairs=(pairs.first, pairs.second)), params)
    on = time.perf_counter() - started
    return {"rows": len(texts), "split_off_s": round(off, 1), "split_minhash_s": round(on, 1),
            "ratio": round(on / off, 2), "pairs": len(pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--embedding-sizes", nargs="*", type=int, default=[10_000])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.8])
    parser.add_argument("--cosine", type=float, default=0.95)
    parser.add_argument("--split-rows", type=int, default=200_000,
                        help="Also time generate-splits' planning with and without --near-duplicates minhash (0: skip).")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # internal: n method threshold
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.one:
        n, method = int(args.one[0]), args.one[1]
        print(json.dumps(split_cost(n) if method == "split" else one(n, method, float(args.one[2]))))
        return
    runs = [(n, "minhash", t) for n in args.sizes for t in args.thresholds]
    runs += [(n, "embedding", args.cosine) for n in args.embedding_sizes]
    runs += [(args.split_rows, "split", 0.0)] if args.split_rows else []
    results = []
    for n, method, threshold in runs:
        line = subprocess.run([sys.executable, __file__, "--one", str(n), method, str(threshold)], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        print(line, flush=True)
    print("\n| rows | method | threshold | seconds | peak RSS MB | copies found (1 / 2 words edited) | other pairs "
          "(checked: real / false) |")
    print("|---|---|---|---|---|---|---|")
    for r in [r for r in results if "ratio" in r]:
        print(f"generate-splits planning at {r['rows']:,} rows: {r['split_off_s']} s exact duplicates only, "
              f"{r['split_minhash_s']} s with --near-duplicates minhash ({r['ratio']}x, {r['pairs']} pairs)")
    for r in [r for r in results if "ratio" not in r]:
        print(f"| {r['rows']:,} | {r['method']} | {r['threshold']} | {r['seconds']} | {r['peak_rss_mb']} | "
              f"{r['found']}/{r['inserted']} = {r['recall']:.3f} ({r['recall_1_word']:.3f} / {r['recall_2_words']:.3f})"
              f" | {r['other_pairs']} ({r['other_checked']}: {r['other_real']} / {r['other_false']}) |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
