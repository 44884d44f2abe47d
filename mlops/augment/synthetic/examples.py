"""Few-shot examples: built-in movie-review snippets per language, or drawn from a labelled CSV."""

from __future__ import annotations

from pathlib import Path

from mlops.core.errors import DataError

DEFAULT_LABELS = ["negative", "neutral", "positive"]

# Written for this project (not copied from any data set), short and in the style of MR snippets.
BUILTIN_EXAMPLES: dict[str, dict[str, list[str]]] = {
    "en": {
        "negative": [
            "A tedious, overlong mess that wastes a talented cast on a script with nothing to say.",
            "The jokes land with a thud and the plot makes less sense the longer it goes on.",
            "Flat characters, lazy twists and an ending you can see coming from the first scene.",
            "I kept checking my watch; even the action scenes feel half-hearted and cheap.",
            "A sequel nobody asked for, and it shows in every dull, recycled moment.",
        ],
        "neutral": [
            "The film follows a retired teacher who moves back to the coastal town where she grew up.",
            "It runs just under two hours and was shot mostly on location in northern Portugal.",
            "Some scenes work and others do not; it is a fairly ordinary entry in the genre.",
            "The story is told in three chapters, each from the point of view of a different sibling.",
            "Fans of the novel will recognise most of the plot, though a few subplots are dropped.",
        ],
        "positive": [
            "A warm, funny and beautifully acted film that earns every one of its tears.",
            "Sharp writing and a terrific lead performance make this the best comedy of the year.",
            "Gorgeous to look at and surprisingly moving; I would happily watch it again.",
            "The director keeps the tension high from the first frame to the very last.",
            "A smart, generous crowd-pleaser with a heart as big as its laughs.",
        ],
    },
    "pl": {
        "negative": [
            "Nudny, przeciągnięty film, który marnuje dobrą obsadę na scenariusz bez pomysłu.",
            "Żarty w ogóle nie bawią, a fabuła z każdą minutą ma coraz mniej sensu.",
            "Płaskie postacie i zakończenie, które widać już od pierwszej sceny.",
            "Ciągle patrzyłem na zegarek; nawet sceny akcji są zrobione byle jak.",
        ],
        "neutral": [
            "Film opowiada o emerytowanej nauczycielce, która wraca do rodzinnego miasteczka nad morzem.",
            "Trwa niecałe dwie godziny i był kręcony głównie w plenerach na Mazurach.",
            "Niektóre sceny działają, inne nie; to dość typowy przedstawiciel gatunku.",
            "Historia jest podzielona na trzy rozdziały, każdy z perspektywy innego rodzeństwa.",
        ],
        "positive": [
            "Ciepły, zabawny i świetnie zagrany film, który naprawdę wzrusza.",
            "Błyskotliwy scenariusz i znakomita główna rola, to najlepsza komedia tego roku.",
            "Pięknie nakręcony i zaskakująco poruszający; chętnie obejrzę go jeszcze raz.",
            "Reżyser trzyma w napięciu od pierwszego do ostatniego kadru.",
        ],
    },
    "de": {
        "negative": [
            "Ein langatmiger, zäher Film, der seine gute Besetzung an ein leeres Drehbuch verschwendet.",
            "Die Witze zünden nicht und die Handlung wird immer unsinniger.",
            "Flache Figuren und ein Ende, das man schon in der ersten Szene kommen sieht.",
        ],
        "neutral": [
            "Der Film folgt einer pensionierten Lehrerin, die in ihre Heimatstadt an der Küste zurückkehrt.",
            "Er dauert knapp zwei Stunden und wurde größtenteils in Norddeutschland gedreht.",
            "Manche Szenen funktionieren, andere nicht; ein recht gewöhnlicher Beitrag zum Genre.",
        ],
        "positive": [
            "Ein warmer, witziger und wunderbar gespielter Film, der wirklich berührt.",
            "Ein kluges Drehbuch und eine großartige Hauptrolle machen ihn zur besten Komödie des Jahres.",
            "Wunderschön fotografiert und überraschend bewegend; ich würde ihn sofort wieder sehen.",
        ],
    },
}


def builtin_examples(labels: list[str], lang: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Built-in examples for ``labels`` in ``lang`` (English when that language has none) and warnings."""
    warnings = []
    table = BUILTIN_EXAMPLES.get(lang)
    if table is None:
        table = BUILTIN_EXAMPLES["en"]
        warnings.append(
            f"no built-in examples in {lang!r} (built-ins: {', '.join(BUILTIN_EXAMPLES)}); using English ones, so "
            "expect more rows rejected as wrong_language. Pass --seed-examples with texts in that language."
        )
    missing = [label for label in labels if label not in table]
    if missing:
        raise DataError(
            f"there are no built-in examples for the labels {missing} (built-in labels: {', '.join(table)}). "
            "Pass --seed-examples CSV with text and label columns holding examples of every label."
        )
    return [(text, label) for label in labels for text in table[label]], warnings


def read_labelled_csv(path: Path, text_column: str, label_column: str, *, need_text: bool = True):
    """Read a labelled table through the project's one reader; returns a DataFrame of stripped-safe strings."""
    from mlops.data.tables import read_table, require_columns, table_columns

    wanted = {"--text-column": text_column if need_text else None, "--target-column": label_column}
    require_columns(table_columns(Path(path)), wanted, Path(path))
    frame = read_table(Path(path)).fillna("").astype(str)
    frame = frame[frame[label_column].str.strip() != ""]
    if need_text:
        frame = frame[frame[text_column].str.strip() != ""]
    if frame.empty:
        raise DataError(f"{path} has no rows with a non-empty {label_column!r}" + (f" and {text_column!r}." if need_text else "."))
    return frame


def seed_file_examples(path: Path, text_column: str, label_column: str, labels: list[str]) -> list[tuple[str, str]]:
    frame = read_labelled_csv(path, text_column, label_column)
    present = set(frame[label_column].str.strip())
    missing = [label for label in labels if label not in present]
    if missing:
        raise DataError(
            f"{path} has no examples of the labels {missing} (it has: {', '.join(sorted(present))}). "
            "Add examples of every requested label, or change --labels."
        )
    frame = frame[frame[label_column].str.strip().isin(labels)]
    return [(t.strip(), y.strip()) for t, y in zip(frame[text_column], frame[label_column], strict=True)]
