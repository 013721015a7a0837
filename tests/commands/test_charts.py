"""The /stats chart: a valid, small PNG, readable on Discord's dark theme, described in words."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from app.commands import charts
from app.commands.charts import ActivityChart, describe, every_week, render_png
from app.store.models import AuthorCount, WeekCount
from tests.png import contrast, open_png

START = date(2024, 1, 1)  # a Monday


def two_years() -> ActivityChart:
    """104 weeks of made-up but fixed activity, with quiet weeks, and five authors."""
    counts = [(i * 37) % 400 if i % 9 else 0 for i in range(104)]
    weeks = [WeekCount(START + timedelta(weeks=i), n) for i, n in enumerate(counts) if n]
    authors = [
        AuthorCount("1", "Alice K", 9_120),
        AuthorCount("2", "bob $not math$", 5_004),
        AuthorCount("3", "Zoë 日本語 😀", 3_871),
        AuthorCount("4", "", 1_200),
        AuthorCount("5", "a member with a very long display name", 88),
    ]
    return ActivityChart(
        "#general · all time", every_week(weeks, START, date(2025, 12, 28)), authors
    )


def test_the_chart_is_a_whole_png_of_sensible_size() -> None:
    png = render_png(two_years())
    image = open_png(png)
    assert image.size == (1000, 562)
    assert len(png) < 500_000
    # The same data draws the same bytes: no time stamp or version in the file.
    assert render_png(two_years()) == png


def test_the_chart_carries_discords_dark_background() -> None:
    image = open_png(render_png(two_years())).convert("RGB")
    background = tuple(int(charts.BACKGROUND[i : i + 2], 16) for i in (1, 3, 5))
    corners = [(0, 0), (image.width - 1, 0), (0, image.height - 1)]
    assert all(image.getpixel(corner) == background for corner in corners)
    # Most of it is background, and the bars' colours are in it.
    colours = dict((colour, n) for n, colour in image.getcolors(1 << 20) or [])
    assert colours[background] > image.width * image.height // 3
    for bars in (charts.WEEKS, charts.AUTHORS):
        assert tuple(int(bars[i : i + 2], 16) for i in (1, 3, 5)) in colours


@pytest.mark.parametrize(
    ("colour", "floor"),
    [(charts.TEXT, 4.5), (charts.MUTED, 4.5), (charts.WEEKS, 3.0), (charts.AUTHORS, 3.0)],
)
def test_every_colour_stands_out_on_the_dark_theme(colour: str, floor: float) -> None:
    # WCAG 2: 4.5:1 for text, 3:1 for the parts of a graphic.
    assert contrast(colour, charts.BACKGROUND) >= floor


def test_a_long_history_and_an_empty_one_both_draw() -> None:
    weeks = [WeekCount(START + timedelta(weeks=i), 50 + i % 30) for i in range(520)]
    long = ActivityChart("#general · all time", weeks, [AuthorCount("1", "Alice", 10)])
    assert open_png(render_png(long)).size == (1000, 562)
    empty = ActivityChart("#quiet · the last 30 days", [], [])
    assert open_png(render_png(empty)).size == (1000, 562)


def test_every_week_fills_the_quiet_weeks_from_monday_to_monday() -> None:
    counts = [WeekCount(date(2024, 1, 8), 3), WeekCount(date(2024, 1, 29), 1)]
    weeks = every_week(counts, date(2024, 1, 3), date(2024, 2, 1))
    assert [(w.week.isoformat(), w.message_count) for w in weeks] == [
        ("2024-01-01", 0),
        ("2024-01-08", 3),
        ("2024-01-15", 0),
        ("2024-01-22", 0),
        ("2024-01-29", 1),
    ]
    assert all(w.week.weekday() == 0 for w in weeks)


def test_the_alt_text_says_what_the_chart_shows() -> None:
    chart = two_years()
    text = describe(chart)
    busiest = max(chart.weeks, key=lambda w: w.message_count)
    assert "#general" in text
    assert "from 2024-01-01 to 2025-12-28" in text
    assert f"Busiest week: {busiest.week:%Y-%m-%d} with {busiest.message_count:,} messages" in text
    assert f"{sum(w.message_count for w in chart.weeks):,} messages over 104 weeks" in text
    # Names as members wrote them (a screen reader can say what the font cannot draw).
    assert "Alice K 9,120; bob $not math$ 5,004; Zoë 日本語 😀 3,871; 4 1,200" in text
    assert len(text) <= 1024


def test_the_alt_text_fits_discords_limit() -> None:
    authors = [AuthorCount(str(i), "x" * 300, 10) for i in range(5)]
    chart = ActivityChart("#" + "y" * 900, [WeekCount(START, 10)], authors)
    assert len(describe(chart)) == 1024
    assert describe(ActivityChart("#empty · all time", [], [])) == "#empty · all time: no messages."
