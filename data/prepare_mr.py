"""Rebuild the shipped MR movie-review files from the vaderSentiment 3.3.2 source tarball.

The MR sentences (Pang & Lee, 2005) ship inside VADER's source distribution (Hutto & Gilbert,
ICWSM 2014, MIT licence). Rows with id <= 5152 are positive, the rest negative.

    uv run python -m data.prepare_mr
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

POSITIVE_MAX_ID = 5152
SAMPLE_SIZE = 3000
NEW_SIZE = 300
SAMPLE_SEED = 13
HERE = Path(__file__).resolve().parent


def read_ground_truth(sdist: Path, name: str) -> list[tuple[str, float, str]]:
    """(id, mean rating, text) rows of one ``*_GroundTruth.txt`` file of VADER's ICWSM 2014 data."""
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_bytes = outer.extractfile(member).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        member = next(m for m in inner.getmembers() if m.name.endswith(f"{name}_GroundTruth.txt"))
        raw = inner.extractfile(member).read().decode("utf-8")
    rows = []
    for line in raw.splitlines():
        if line.strip():
            row_id, rating, text = line.split("\t", 2)
            rows.append((row_id, float(rating), text.strip()))
    return rows


def read_mr_rows(sdist: Path) -> list[tuple[str, str]]:
    return [(text, "positive" if int(row_id) <= POSITIVE_MAX_ID else "negative")
            for row_id, _rating, text in read_ground_truth(sdist, "movieReviewSnippets")]


def download_sdist(directory: Path) -> Path:
    """VADER's source tarball (the wheel does not hold the data), from the package index."""
    subprocess.run(
        [shutil.which("pip") or "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "vaderSentiment==3.3.2", "-d", str(directory)],
        check=True,
    )
    return next(Path(directory).glob("vaderSentiment-*.tar.gz"))


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = read_mr_rows(download_sdist(Path(tmp)))
    write_csv(HERE / "mr" / "mr_full.csv", rows)
    write_derived_files(rows)
    print(f"wrote {len(rows)} rows, a {SAMPLE_SIZE}-row sample and {NEW_SIZE} unseen rows")


def write_derived_files(rows: list[tuple[str, str]]) -> None:
    """The training sample, and rows outside it that play 'new data' (texts, and their labels apart)."""
    import numpy as np

    rng = np.random.default_rng(SAMPLE_SEED)
    order = rng.permutation(len(rows))
    picked = sorted(order[:SAMPLE_SIZE])
    unseen = sorted(order[SAMPLE_SIZE:SAMPLE_SIZE + NEW_SIZE])
    write_csv(HERE / "sample" / "mr_sample.csv", [rows[i] for i in picked])
    write_csv(HERE / "sample" / "new_reviews.csv", [(f"r{i}", rows[i][0]) for i in unseen], header=("id", "text"))
    write_csv(HERE / "sample" / "new_reviews_labels.csv", [(f"r{i}", rows[i][1]) for i in unseen],
              header=("id", "label"))


if __name__ == "__main__":
    main()
