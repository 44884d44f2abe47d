"""Rebuild the shipped MR movie-review files from the vaderSentiment 3.3.2 source tarball.

The MR sentences (Pang & Lee, 2005) ship inside VADER's source distribution (Hutto & Gilbert,
ICWSM 2014, MIT licence). Rows with id <= 5152 are positive, the rest negative.

    uv run python -m data.prepare_mr
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

POSITIVE_MAX_ID = 5152
SAMPLE_SIZE = 3000
SAMPLE_SEED = 13
HERE = Path(__file__).resolve().parent


def read_mr_rows(sdist: Path) -> list[tuple[str, str]]:
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_bytes = outer.extractfile(member).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        member = next(m for m in inner.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt"))
        raw = inner.extractfile(member).read().decode("utf-8")
    rows = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        row_id, _rating, text = line.split("\t", 2)
        label = "positive" if int(row_id) <= POSITIVE_MAX_ID else "negative"
        rows.append((text.strip(), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main() -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "vaderSentiment==3.3.2", "-d", tmp],
            check=True,
        )
        rows = read_mr_rows(next(Path(tmp).glob("vaderSentiment-*.tar.gz")))
    write_csv(HERE / "mr" / "mr_full.csv", rows)
    rng = np.random.default_rng(SAMPLE_SEED)
    picked = sorted(rng.choice(len(rows), size=SAMPLE_SIZE, replace=False))
    write_csv(HERE / "sample" / "mr_sample.csv", [rows[i] for i in picked])
    print(f"wrote {len(rows)} rows and a {SAMPLE_SIZE}-row sample")


if __name__ == "__main__":
    main()
