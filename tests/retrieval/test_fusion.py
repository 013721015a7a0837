"""Fusing lexical and dense scores, as a pure unit."""

from __future__ import annotations

from app.retrieval.fusion import AUTHOR_BOOST, Candidate, Evidence, fuse


def ids(fused: list) -> list[int]:  # type: ignore[type-arg]
    return [f.id for f in fused]


def test_words_and_meaning_together_beat_meaning_alone() -> None:
    candidates = [Candidate(i, "a") for i in (1, 2, 3)]
    evidence = Evidence(lexical={1: 12.0, 2: 1.0}, dense={1: 0.45, 2: 0.30, 3: 0.50})
    assert ids(fuse(candidates, evidence, k=3))[0] == 1


def test_dense_alone_ranks_when_no_word_matches() -> None:
    candidates = [Candidate(i, "a") for i in (1, 2, 3)]
    evidence = Evidence(dense={1: 0.1, 2: 0.6, 3: 0.3})
    assert ids(fuse(candidates, evidence, k=2)) == [2, 3]


def test_a_short_reply_rises_with_the_question_before_it() -> None:
    # 2 is "it was amazing!" right after 1, the question that holds the topic.
    candidates = [
        Candidate(1, "a", neighbours=(2,)),
        Candidate(2, "b", neighbours=(1, 3)),
        Candidate(3, "a"),
    ]
    evidence = Evidence(dense={1: 0.8, 2: 0.30, 3: 0.35})
    plain = fuse([Candidate(c.id, c.author_id) for c in candidates], evidence, k=3)
    assert ids(plain).index(2) > ids(plain).index(3)
    assert ids(fuse(candidates, evidence, k=3)) == [1, 2, 3]


def test_the_named_member_and_the_period_boost() -> None:
    candidates = [Candidate(1, "ana"), Candidate(2, "ben"), Candidate(3, "ben", in_period=True)]
    evidence = Evidence(dense={1: 0.58, 2: 0.6, 3: 0.5})
    assert ids(fuse(candidates, evidence, k=1)) == [2]
    assert ids(fuse(candidates, evidence, author_ids=frozenset({"ana"}), k=1)) == [1]
    boosted = fuse(candidates, evidence, author_ids=frozenset({"ana"}), k=3)
    assert boosted[0].score >= AUTHOR_BOOST


def test_nothing_to_fuse() -> None:
    assert fuse([], Evidence(), k=5) == []
    assert fuse([Candidate(1, "a")], Evidence(), k=0) == []
    # No scores at all still returns the candidates, newest first.
    assert ids(fuse([Candidate(1, "a"), Candidate(2, "a")], Evidence(), k=2)) == [2, 1]
