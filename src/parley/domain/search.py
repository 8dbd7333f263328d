"""Search text rules, with no keys and no database: how a body becomes index terms,
how a query is read, and how a hit is highlighted.

Terms
    Text is normalised (NFKC, then casefolded) and cut into runs of letters and digits;
    everything else (spaces, punctuation, symbols, ``_``) separates. A run of Chinese,
    Japanese or Korean characters has no spaces to cut at, so it becomes its
    overlapping bigrams (``東京都`` → ``東京``, ``京都``; one character alone: itself),
    and every such character is also a *unigram* term. The body's terms, in order, are
    the ``words`` stream (words and bigrams), followed by the unigrams: a phrase is a run
    of adjacent ``words`` terms, and a substring of CJK text of two or more characters is
    a phrase of its bigrams; a single character is looked up as a unigram. The store
    hashes every term (``parley.store.search``), keeping a unigram apart from a word with
    the same characters.

Queries
    Words (all must match), ``"a phrase"``, ``-word`` or ``-"a phrase"`` to exclude. A
    bare word that cuts into several terms (``e-mail``, ``東京都``) is a phrase. Empty,
    an unclosed quote, only exclusions, or nothing searchable: ``InvalidInput``.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from parley.domain.models import Message
from parley.errors import InvalidInput

__all__ = [
    "MAX_QUERY_CHARS",
    "Clause",
    "Query",
    "SearchFilters",
    "SearchHit",
    "highlight",
    "normalise",
    "parse_query",
    "terms",
]

MAX_QUERY_CHARS = 500
MAX_CLAUSES = 16

UNIGRAM = "\x00u"
"""Prefix of a unigram term: hashed apart from a word of the same characters."""

# Han (with extensions A and compatibility), kana, Hangul syllables and jamo, CJK
# punctuation excluded (it is not \w anyway).
_CJK_CLASS = (
    "\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
)
_RUN = re.compile(r"[^\W_]+")
_CJK = re.compile(f"[{_CJK_CLASS}]+")
_QUERY_PART = re.compile(r'\s*(-?)(?:"([^"]*)"|([^\s"]+))\s*')


def normalise(text: str) -> str:
    """NFKC, then casefold: full-width letters, ligatures and case fold together."""
    return unicodedata.normalize("NFKC", text).casefold()


def _pieces(run: str) -> list[tuple[str, bool]]:
    """A letter-and-digit run cut into its non-CJK and CJK parts, in order."""
    out: list[tuple[str, bool]] = []
    at = 0
    for match in _CJK.finditer(run):
        if match.start() > at:
            out.append((run[at : match.start()], False))
        out.append((match.group(), True))
        at = match.end()
    if at < len(run):
        out.append((run[at:], False))
    return out


def _stream(normalised: str) -> tuple[list[str], list[str]]:
    """The ``words`` terms in order, and the unigrams."""
    words: list[str] = []
    unigrams: list[str] = []
    for run in _RUN.findall(normalised):
        if run.isascii():
            words.append(run)
            continue
        for piece, cjk in _pieces(run):
            if not cjk:
                words.append(piece)
            elif len(piece) == 1:
                words.append(piece)
                unigrams.append(UNIGRAM + piece)
            else:
                words.extend(piece[i : i + 2] for i in range(len(piece) - 1))
                unigrams.extend(UNIGRAM + c for c in piece)
    return words, unigrams


def terms(text: str) -> list[str]:
    """A body's index terms: the ``words`` stream, then its unigrams."""
    words, unigrams = _stream(normalise(text))
    return words + unigrams


@dataclass(frozen=True, slots=True)
class Clause:
    """Terms that must appear adjacent and in this order (one term: anywhere)."""

    terms: tuple[str, ...]
    exclude: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: every included clause must match, no excluded one may."""

    clauses: tuple[Clause, ...]
    marks: tuple[str, ...]
    """Normalised words and CJK strings to highlight (the included clauses')."""


def _clause_terms(text: str) -> tuple[tuple[str, ...], list[str]]:
    words, unigrams = _stream(normalise(text))
    if len(words) == 1 and len(unigrams) == 1 and unigrams[0][len(UNIGRAM) :] == words[0]:
        return (unigrams[0],), words  # one CJK character: its unigram finds it anywhere
    return tuple(words), words


def parse_query(q: str) -> Query:
    """Read a query; ``InvalidInput`` when it is empty or malformed."""
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if q.count('"') % 2:
        raise InvalidInput("the query has an unclosed quote")
    clauses: list[Clause] = []
    marks: list[str] = []
    at = 0
    while at < len(q):
        match = _QUERY_PART.match(q, at)
        if match is None or match.end() == at:
            if q[at:].strip():
                raise InvalidInput("the query is malformed")
            break
        at = match.end()
        minus, phrase, word = match.groups()
        text = phrase if phrase is not None else word
        found, words = _clause_terms(text)
        if not found:
            continue
        clause = Clause(found, exclude=bool(minus))
        if clause not in clauses:
            clauses.append(clause)
        if not minus:
            marks.extend(words)
    if not any(not c.exclude for c in clauses):
        raise InvalidInput("the query has nothing to search for")
    if len(clauses) > MAX_CLAUSES:
        raise InvalidInput(f"the query has more than {MAX_CLAUSES} terms")
    return Query(tuple(clauses), tuple(dict.fromkeys(marks)))


HIGHLIGHT_CHARS = 300


def highlight(body: str, query: Query, width: int = HIGHLIGHT_CHARS) -> str:
    """An HTML excerpt of ``body`` around its first match, every matched word or CJK
    string in ``<mark>``; the rest escaped, so a client may render it as HTML."""
    # The body normalised one character at a time, with where each one came from.
    norm: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(body):
        for c in normalise(char):
            norm.append(c)
            origin.append(index)
    text = "".join(norm)
    wanted = set(query.marks)
    spans: list[tuple[int, int]] = []
    for run in _RUN.finditer(text):
        start = run.start()
        for piece, cjk in _pieces(run.group()):
            if not cjk and piece in wanted:
                spans.append((start, start + len(piece)))
            start += len(piece)
    for mark in wanted:
        if _CJK.fullmatch(mark) is not None:
            at = text.find(mark)
            while at >= 0:
                spans.append((at, at + len(mark)))
                at = text.find(mark, at + 1)
    bounds = _merge([(origin[s], origin[e - 1] + 1) for s, e in spans if e > s])
    first = bounds[0][0] if bounds else 0
    begin = max(0, first - width // 3)
    end = min(len(body), begin + width)
    out: list[str] = ["…" if begin > 0 else ""]
    at = begin
    for s, e in bounds:
        if e <= begin or s >= end:
            continue
        s, e = max(s, begin), min(e, end)
        out.append(html.escape(body[at:s], quote=False))
        out.append(f"<mark>{html.escape(body[s:e], quote=False)}</mark>")
        at = e
    out.append(html.escape(body[at:end], quote=False))
    out.append("…" if end < len(body) else "")
    return "".join(out)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What narrows a search besides the query; times are stored-format timestamps,
    both bounds exclusive."""

    room_id: str | None = None
    sender_id: str | None = None
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message found, with its place in the order (``(score, doc)`` ascending:
    lower score is better; ``doc`` descending breaks ties, newest first)."""

    message: Message
    score: float
    doc: int
