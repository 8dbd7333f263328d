"""The search text rules without keys or a database: terms, queries, highlights."""

from __future__ import annotations

import pytest

from parley.domain.search import UNIGRAM, Clause, highlight, parse_query, terms
from parley.errors import InvalidInput


def test_words_are_normalised_and_cut_at_punctuation() -> None:
    assert terms("Hello, WORLD! e-mail Ｆｕｌｌ ﬁne Straße") == [
        "hello", "world", "e", "mail", "full", "fine", "strasse",
    ]  # fmt: skip


def test_cjk_runs_become_bigrams_then_unigrams() -> None:
    assert terms("東京都 x 京") == [
        "東京", "京都", "x", "京", UNIGRAM + "東", UNIGRAM + "京", UNIGRAM + "都", UNIGRAM + "京",
    ]  # fmt: skip
    assert terms("abc東京") == ["abc", "東京", UNIGRAM + "東", UNIGRAM + "京"]


def test_queries() -> None:
    q = parse_query('Fox "Quick  brown" -dog -"lazy cat" 東京都 京')
    assert q.clauses == (
        Clause(("fox",)),
        Clause(("quick", "brown")),
        Clause(("dog",), exclude=True),
        Clause(("lazy", "cat"), exclude=True),
        Clause(("東京", "京都")),
        Clause((UNIGRAM + "京",)),
    )
    assert parse_query("e-mail").clauses == (Clause(("e", "mail")),)
    assert parse_query("a a A").clauses == (Clause(("a",)),)


@pytest.mark.parametrize(
    "q",
    ["", "   ", '"open', "-x", '-"a b"', "!!! ...", "-", "x" * 501, " ".join("abcdefghijklmnopq")],
)
def test_malformed_queries(q: str) -> None:
    with pytest.raises(InvalidInput):
        parse_query(q)


def test_highlight() -> None:
    q = parse_query("fox 東京")
    assert (
        highlight("The <Fox> & 東京都", q)
        == "The &lt;<mark>Fox</mark>&gt; &amp; <mark>東京</mark>都"
    )
    long = "x " * 400 + "fox " + "y " * 400
    out = highlight(long, q)
    assert out.startswith("…") and out.endswith("…") and "<mark>fox</mark>" in out
    assert highlight("nothing here", q) == "nothing here"
