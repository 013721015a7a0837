"""Relative dates resolved against a message's own date, as a pure unit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.llm.dates import resolve

SENT = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "resolved"),
    [
        ("We adopted a puppy yesterday!", "We adopted a puppy yesterday (7 May 2023)!"),
        (
            "Last week I ran a charity race",
            "Last week (the week before 8 May 2023) I ran a charity race",
        ),
        ("went camping last weekend", "went camping last weekend (the weekend before 8 May 2023)"),
        ("I started painting last year", "I started painting last year (2022)"),
        ("since last month", "since last month (April 2023)"),
        ("two weeks ago we moved", "two weeks ago (around 24 April 2023) we moved"),
        ("3 years ago", "3 years ago (2020)"),
        ("see you tomorrow", "see you tomorrow (9 May 2023)"),
        ("no time words here", "no time words here"),
        ("yesterdays are gone", "yesterdays are gone"),
    ],
)
def test_relative_dates_are_followed_by_their_date(text: str, resolved: str) -> None:
    assert resolve(text, SENT) == resolved


def test_the_year_turns_over() -> None:
    assert resolve("last month", datetime(2024, 1, 3, tzinfo=UTC)) == "last month (December 2023)"
    assert resolve("next month", datetime(2023, 12, 31, tzinfo=UTC)) == "next month (January 2024)"
