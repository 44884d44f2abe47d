"""A real multi-label text set: Debian package descriptions tagged with what they work with (debtags).

Debian's package index (``Packages``) carries, for many packages, a ``Tag:`` field of debtags: facets that
people review, such as ``works-with::audio`` or ``works-with::image:raster``. Its ``Translation-en`` file
carries each package's long English description. Joined, they give a text (the short and the long
description) with a set of labels: the ``works-with`` values (their first part: ``image:raster`` and
``image:vector`` count as ``image``), kept when at least ``MIN_ROWS`` packages have them (``TODO``, debtags'
"not reviewed yet", is dropped); then ``MAX_ROWS`` packages in a seeded order. A package whose
description is shared with another (``-dev``/``-doc`` siblings often repeat it) stays in; the ``source``
column (the source package) keeps such siblings in one leakage group with ``--group-column source``.

The index is what ``apt-get update -o Acquire::Languages=en`` fetches from the Debian mirror this machine
uses; the release and the index date go into ``debian_works_with.json`` next to the CSV.

    apt-get update -o Acquire::Languages=en && uv run python -m data.prepare_debtags
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import re
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
LISTS = Path("/var/lib/apt/lists")
OUT = HERE / "shapes" / "debian_works_with.csv"
MIN_ROWS = 80
MAX_ROWS = 3000
SEED = 11


def _largest(pattern: str) -> Path:
    """The largest apt list matching ``pattern``: the release's main index, not its -updates or -security."""
    found = sorted(LISTS.glob(pattern), key=lambda path: path.stat().st_size)
    if not found:
        raise SystemExit(f"no {pattern} under {LISTS}; run `apt-get update -o Acquire::Languages=en` first.")
    return found[-1]


def _read(path: Path) -> str:
    """An apt list's text (apt keeps them lz4- or xz-compressed)."""
    return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True,
                          text=True).stdout


def _fields(paragraph: str) -> dict[str, str]:
    fields, key = {}, None
    for line in paragraph.splitlines():
        if line.startswith((" ", "\t")) and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def _long_description(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()[1:]]
    return " ".join(line for line in lines if line and line != ".")


def descriptions() -> dict[tuple[str, str | None], str]:
    """Each package's full English description (``Translation-en``), by package and description md5."""
    found = {}
    for paragraph in _read(_largest("*_main_i18n_Translation-en*")).split("\n\n"):
        fields = _fields(paragraph)
        if "Package" in fields and "Description-en" in fields:
            found[(fields["Package"], fields.get("Description-md5"))] = fields["Description-en"]
    return found


def build() -> dict:
    index = _largest("*_main_binary-amd64_Packages*")
    packages = _read(index)
    long = descriptions()
    rows = []
    for paragraph in packages.split("\n\n"):
        fields = _fields(paragraph)
        tags = re.split(r",\s*", fields.get("Tag", "").replace("\n", " "))
        values = sorted({t.split("::", 1)[1].split(":")[0] for t in map(str.strip, tags) if t.startswith("works-with::")})
        if not values:
            continue
        full = long.get((fields["Package"], fields.get("Description-md5")), fields.get("Description", ""))
        text = f"{full.splitlines()[0].strip()}. {_long_description(full)}".strip()
        rows.append({"package": fields["Package"], "source": fields.get("Source", fields["Package"]).split()[0],
                     "text": text, "tags": values})
    counts = collections.Counter(v for row in rows for v in row["tags"])
    kept = {v for v, n in counts.items() if n >= MIN_ROWS and v != "TODO"}  # TODO: debtags' "not yet tagged"
    rows = [{**row, "tags": [v for v in row["tags"] if v in kept]} for row in rows]
    rows = [row for row in rows if row["tags"] and len(row["text"]) > 40]
    rows.sort(key=lambda row: hashlib.sha256(f"{SEED}:{row['package']}".encode()).hexdigest())
    rows = sorted(rows[:MAX_ROWS], key=lambda row: row["package"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["package", "source", "text", "tags"])
        for row in rows:
            writer.writerow([row["package"], row["source"], row["text"], "|".join(row["tags"])])
    release = LISTS / (index.name.split("_main_")[0] + "_InRelease")
    fields = _fields(_read(release)) if release.is_file() else {}
    facts = {"rows": len(rows), "labels": dict(collections.Counter(v for row in rows for v in row["tags"]).most_common()),
             "index": index.name.split("_main_")[0], "release": fields.get("Codename"), "index_date": fields.get("Date"), "min_rows_per_label": MIN_ROWS, "seed": SEED,
             "sha256": hashlib.sha256(OUT.read_bytes()).hexdigest()}
    OUT.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return facts


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
