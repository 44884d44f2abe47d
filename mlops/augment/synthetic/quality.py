"""Cleaning and filtering generated rows: normalise, length, language, copies and (near) duplicates.

The language check is a dependency-free heuristic: the share of letters in the language's script
(Cyrillic, Greek, Arabic, Hebrew, CJK, Hangul, Devanagari, Latin) and, for languages with a
stopword list below, whether another language's stopwords clearly outnumber the requested one's.
Texts under 5 words, and languages it has no data for, are not judged ("unknown" is never rejected).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict

_STOPWORDS = {
    "en": "the a an and or but is are was were be been it this that of to in on for with as at by not no "
          "very so i you he she they we my his her their its have has had do does did film movie just too",
    "pl": "i w na z że się nie to jest jak ale do o od po za co tak czy ten ta jego jej już tylko bardzo "
          "film filmu który która które są być był była jako przez dla mnie może",
    "de": "der die das und ist nicht ein eine zu mit sich auf für von den dem des im es sehr aber auch "
          "wie so ich er sie wir war sind noch nur film",
    "fr": "le la les et est un une des de du pas que qui en dans pour sur avec ce cette il elle je très "
          "mais plus ne se au aux son sa film",
    "es": "el la los las y es un una de del que en no por con para se lo muy pero su sus como más al "
          "fue está película",
    "it": "il lo la le gli e è un una di del della che non per con si ma molto come più sono al film",
    "pt": "o a os as e é um uma de do da que não em por com para se muito mas como mais foi filme",
    "nl": "de het een en is niet van dat in op te met voor zijn maar ook als zo heel er was film",
}
STOPWORDS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}

_SCRIPT_OF_LANG = {
    **dict.fromkeys(["ru", "uk", "bg", "sr", "mk", "be", "kk"], "cyrillic"),
    "el": "greek", "ar": "arabic", "fa": "arabic", "ur": "arabic", "he": "hebrew",
    "zh": "cjk", "ja": "cjk", "ko": "hangul", "hi": "devanagari", "mr": "devanagari",
    **dict.fromkeys(["en", "pl", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "cs", "sk", "hu",
                     "ro", "hr", "sl", "tr", "id", "vi", "et", "lv", "lt"], "latin"),
}

LANGUAGE_NAMES = {
    "en": "English", "pl": "Polish", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "uk": "Ukrainian", "cs": "Czech", "sv": "Swedish",
    "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "ar": "Arabic", "tr": "Turkish", "el": "Greek",
    "he": "Hebrew", "hi": "Hindi", "fi": "Finnish", "da": "Danish", "no": "Norwegian", "hu": "Hungarian",
    "ro": "Romanian", "sk": "Slovak", "bg": "Bulgarian", "vi": "Vietnamese", "id": "Indonesian",
}


def language_check_description(lang: str) -> str:
    script = _SCRIPT_OF_LANG.get(lang)
    parts = []
    if script:
        parts.append(f"{script} script share")
    if lang in STOPWORDS:
        parts.append("stopword comparison with " + ", ".join(sorted(STOPWORDS)))
    return " + ".join(parts) if parts else f"none (no script or stopword data for {lang!r})"


def _script(ch: str) -> str | None:
    code = ord(ch)
    if not ch.isalpha():
        return None
    if code < 0x250 or 0x1E00 <= code < 0x1F00:
        return "latin"
    if 0x400 <= code < 0x530:
        return "cyrillic"
    if 0x370 <= code < 0x400 or 0x1F00 <= code < 0x2000:
        return "greek"
    if 0x590 <= code < 0x600:
        return "hebrew"
    if 0x600 <= code < 0x780:
        return "arabic"
    if 0x900 <= code < 0x980:
        return "devanagari"
    if 0xAC00 <= code < 0xD7B0 or 0x1100 <= code < 0x1200:
        return "hangul"
    if 0x3040 <= code < 0x3100 or 0x4E00 <= code < 0xA000 or 0x3400 <= code < 0x4DC0:
        return "cjk"
    return "other"


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def looks_like_wrong_language(text: str, lang: str) -> bool:
    """True only when the heuristic is confident the text is not in ``lang``."""
    expected_script = _SCRIPT_OF_LANG.get(lang)
    if expected_script:
        scripts = [s for s in map(_script, text) if s]
        if len(scripts) >= 10:
            share = sum(s == expected_script for s in scripts) / len(scripts)
            if share < 0.5:
                return True
    if lang in STOPWORDS:
        words = [w.lower() for w in _WORD.findall(text)]
        if len(words) < 5:
            return False
        hits = {code: sum(w in stop for w in words) for code, stop in STOPWORDS.items()}
        own = hits[lang]
        other = max(v for code, v in hits.items() if code != lang)
        if own == 0 and other >= 2:
            return True
        if other >= 3 and other >= 2 * own:
            return True
    return False


_QUOTES = "\"'“”„«»‘’`"


def normalise(text: str, strip_prefixes: tuple[str, ...] = ()) -> str:
    """NFKC, first line only, whitespace collapsed, wrapping quotes and a leading field name removed."""
    text = unicodedata.normalize("NFKC", text or "")
    text = text.strip().split("\n", 1)[0]
    text = re.sub(r"\s+", " ", text).strip()
    for prefix in strip_prefixes:
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix):].strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def dedup_key(text: str) -> str:
    """Case, punctuation and whitespace folded: the key for exact duplicates."""
    return " ".join(w.lower() for w in _WORD.findall(unicodedata.normalize("NFKC", text)))


def _shingles(text: str) -> frozenset[str]:
    words = dedup_key(text).split()
    if len(words) < 3:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + 3]) for i in range(len(words) - 2))


class NearDuplicateIndex:
    """Jaccard similarity of word 3-gram sets, with an inverted index so each lookup stays cheap."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._sets: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = defaultdict(list)

    def add(self, text: str) -> None:
        shingles = _shingles(text)
        idx = len(self._sets)
        self._sets.append(shingles)
        for s in shingles:
            self._postings[s].append(idx)

    def is_near_duplicate(self, text: str) -> bool:
        shingles = _shingles(text)
        if not shingles:
            return False
        overlap: dict[int, int] = defaultdict(int)
        for s in shingles:
            for idx in self._postings.get(s, ()):
                overlap[idx] += 1
        for idx, common in overlap.items():
            union = len(shingles) + len(self._sets[idx]) - common
            if union and common / union >= self.threshold:
                return True
        return False


class QualityFilter:
    """Applies the filters in REJECTION_REASONS order; remembers accepted rows for (near) duplicates."""

    def __init__(self, *, lang: str, min_chars: int, max_chars: int, near_threshold: float,
                 examples: list[str]) -> None:
        self.lang, self.min_chars, self.max_chars = lang, min_chars, max_chars
        self._example_keys = {dedup_key(t) for t in examples}
        self._examples = NearDuplicateIndex(near_threshold)
        for t in examples:
            self._examples.add(t)
        self._seen: set[str] = set()
        self._near = NearDuplicateIndex(near_threshold)

    def reason(self, text: str) -> str | None:
        """Why ``text`` (already normalised) is rejected, or None when it passes."""
        if not text or not dedup_key(text):
            return "empty"
        if len(text) < self.min_chars:
            return "too_short"
        if len(text) > self.max_chars:
            return "too_long"
        if looks_like_wrong_language(text, self.lang):
            return "wrong_language"
        key = dedup_key(text)
        if key in self._example_keys or self._examples.is_near_duplicate(text):
            return "copy_of_example"
        if key in self._seen:
            return "duplicate"
        if self._near.is_near_duplicate(text):
            return "near_duplicate"
        return None

    def remember(self, text: str) -> None:
        self._seen.add(dedup_key(text))
        self._near.add(text)
