"""Reading a question: its words, the members it names, its time words; /search's times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.retrieval.query import (
    Period,
    named,
    parse_when,
    period_in,
    terms,
    without_names,
)

NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)  # a Friday


def test_terms_are_the_content_words_once() -> None:
    assert terms("What did Caroline research after the LGBTQ support group?") == [
        "caroline",
        "research",
        "lgbtq",
        "support",
        "group",
    ]
    assert terms("Is it? is IT?") == []


def test_names_are_found_as_whole_words_and_taken_out() -> None:
    members = ["Ana", "Anastasia", "Jon"]
    question = "What did Anastasia's brother tell Jon?"
    assert named(question, members) == ["Anastasia", "Jon"]
    assert without_names(question, ["Anastasia", "Jon"]) == "What did brother tell ?"
    assert named("And so on", ["Jon"]) == []
    # A question that is only a name keeps it rather than becoming empty.
    assert without_names("Jon", ["Jon"]) == "Jon"


@pytest.mark.parametrize(
    ("question", "period"),
    [
        (
            "what did we decide yesterday?",
            Period(datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)),
        ),
        ("any news today", Period(datetime(2026, 11, 27, tzinfo=UTC), None)),
        (
            "plans from last week",
            Period(datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
        ),
        (
            "last month's release",
            Period(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
        ),
        (
            "what happened in May 2023?",
            Period(datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC)),
        ),
        (
            "the outage in December 2025",
            Period(datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
        ),
        (
            "who won in 2024",
            Period(datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
        ),
        ("what broke before 2026-03-01", Period(None, datetime(2026, 3, 1, tzinfo=UTC))),
        ("since 2026-03-01", Period(datetime(2026, 3, 1, tzinfo=UTC), None)),
        (
            "on 2026-03-01",
            Period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        ),
        ("how did the launch go", None),
        ("the 2026-02-30 thing", None),
    ],
)
def test_time_words_become_a_period(question: str, period: Period | None) -> None:
    assert period_in(question, NOW) == period


def test_ago_is_a_window_around_that_day() -> None:
    period = period_in("the bug from two weeks ago", NOW)
    assert period is not None and period.start is not None and period.end is not None
    assert period.contains(datetime(2026, 11, 13, 12, tzinfo=UTC))
    assert not period.contains(datetime(2026, 10, 1, tzinfo=UTC))


def test_search_times() -> None:
    assert parse_when("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_when(" 3d ", NOW) == datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
    assert parse_when("24h", NOW) == datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    assert parse_when("yesterday", NOW) == datetime(2026, 11, 26, tzinfo=UTC)
    for bad in ("soon", "3 days", "9999y", "2026-13-01", ""):
        with pytest.raises(ValueError, match="use a date like"):
            parse_when(bad, NOW)
