"""A real long-document topic set: Debian package descriptions of 100 words or more, labelled by their section.

Each Debian package sits in one archive section, chosen by its maintainer and checked by the archive team.
Six sections name a topic rather than a packaging form (``python``, ``libs`` or ``doc`` do not): science,
net, admin, games, sound and graphics. A row is a package of one of them whose long English description
(``Translation-en``) has at least ``MIN_WORDS`` words; the text is the short description, a full stop and the
long one, as in ``debian_works_with.csv``. A description shared by several packages is kept once; the
``source`` column keeps a source package's binaries in one leakage group (``--group-column source``).

Built from the same apt lists as ``data/prepare_debtags.py``; the release, the index dates and the file's
sha256 go into ``debian_topics.json`` next to the CSV.

    apt-get update -o Acquire::Languages=en && uv run python -m data.prepare_debian_topics
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
from pathlib import Path

from data.prepare_debtags import LISTS, _fields, _largest, _long_description, _read, descriptions

HERE = Path(__file__).resolve().parent
OUT = HERE / "shapes" / "debian_topics.csv"
TOPICS = ("science", "net", "admin", "games", "sound", "graphics")
MIN_WORDS = 100


def build() -> dict:
    index = _largest("*_main_binary-amd64_Packages*")
    found = descriptions()
    rows, seen = [], set()
    for paragraph in _read(index).split("\n\n"):
        fields = _fields(paragraph)
        section = fields.get("Section", "").split("/")[-1]
        full = found.get((fields.get("Package"), fields.get("Description-md5")), "")
        body = _long_description(full) if full else ""
        if section not in TOPICS or len(body.split()) < MIN_WORDS or body in seen:
            continue
        seen.add(body)
        rows.append({"package": fields["Package"], "source": fields.get("Source", fields["Package"]).split()[0],
                     "text": f"{full.splitlines()[0].strip()}. {body}", "label": section})
    rows.sort(key=lambda row: row["package"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["package", "source", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    words = sorted(len(row["text"].split()) for row in rows)
    release = LISTS / (index.name.split("_main_")[0] + "_InRelease")
    fields = _fields(_read(release)) if release.is_file() else {}
    facts = {"rows": len(rows), "labels": dict(collections.Counter(row["label"] for row in rows).most_common()),
             "words": {"median": words[len(words) // 2], "max": words[-1]}, "min_words": MIN_WORDS,
             "index": index.name.split("_main_")[0], "release": fields.get("Codename"),
             "index_date": fields.get("Date"), "sha256": hashlib.sha256(OUT.read_bytes()).hexdigest()}
    OUT.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return facts


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
