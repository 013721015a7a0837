"""The /stats chart: messages per week and the top authors, as a PNG for Discord's dark theme.

Drawn with matplotlib's Agg backend (no display; its fonts ship inside the package, so nothing
is fetched). matplotlib is imported only when a chart is drawn: the web process never loads it,
and a worker pays its import (about half a second) on its first /stats only.

The image carries its own background, Discord's dark-theme grey, so it reads the same in either
theme; every colour drawn on it is at least 3:1 against that grey (WCAG's floor for graphics)
and text at least 4.5:1. Names come from the server's members, so they are drawn literally (no
`$...$` mathtext) and stripped of what the bundled font cannot draw (CJK, most emoji), which
would otherwise come out as empty boxes; the alt text keeps them as written.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Final

from app.store.models import AuthorCount, WeekCount

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Discord's dark theme: the chat background and its normal and muted text.
BACKGROUND: Final = "#313338"
TEXT: Final = "#dbdee1"
MUTED: Final = "#b5bac1"
GRID: Final = "#4e5058"  # decoration only: no contrast needed
WEEKS: Final = "#949cf7"  # a light blurple
AUTHORS: Final = "#f0b232"  # Discord's yellow
SIZE_INCHES: Final = (8.0, 4.5)
DPI: Final = 125  # 1000 x 562 pixels
NAME_SHOWN: Final = 15
NAME_SAID: Final = 40  # in the alt text
# Past this many weeks, one filled step line draws faster than a bar per week, and reads alike.
BARS_MAX: Final = 80
FONT: Final = "DejaVu Sans"

# matplotlib's font and text-layout caches are not documented as thread-safe, and renders run
# in worker threads: draw one chart at a time.
_RENDER_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class ActivityChart:
    """What the chart shows: a title, every week of the period oldest first, the top authors."""

    title: str
    weeks: Sequence[WeekCount]
    authors: Sequence[AuthorCount]


def every_week(counts: Sequence[WeekCount], first: date, last: date) -> list[WeekCount]:
    """The weeks from the one holding `first` to the one holding `last`, quiet ones as 0."""
    found = {c.week: c.message_count for c in counts}
    week = first - timedelta(days=first.weekday())
    weeks = []
    while week <= last:
        weeks.append(WeekCount(week, found.get(week, 0)))
        week += timedelta(days=7)
    return weeks


def describe(chart: ActivityChart, *, limit: int = 1024) -> str:
    """The chart in words, for its alt text (Discord keeps at most `limit` characters)."""
    if not chart.weeks:
        return f"{chart.title}: no messages."
    total = sum(w.message_count for w in chart.weeks)
    busiest = max(chart.weeks, key=lambda w: (w.message_count, w.week))
    end = chart.weeks[-1].week + timedelta(days=6)
    text = (
        f"Bar chart of {chart.title}, messages per week from {chart.weeks[0].week:%Y-%m-%d} "
        f"to {end:%Y-%m-%d}: {total:,} messages over {len(chart.weeks):,} weeks. "
        f"Busiest week: {busiest.week:%Y-%m-%d} with {busiest.message_count:,} messages."
    )
    if chart.authors:
        ranked = "; ".join(
            f"{_cut(a.name or a.author_id, NAME_SAID)} {a.message_count:,}" for a in chart.authors
        )
        text += f" Top authors by messages: {ranked}."
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def render_png(chart: ActivityChart) -> bytes:
    """The chart as PNG bytes: weekly messages on the left, top authors on the right."""
    with _RENDER_LOCK:
        return _render(chart)


def _render(chart: ActivityChart) -> bytes:
    # A bare Figure draws with the Agg renderer; pyplot (and its global backend) is not used.
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(
        {
            "font.family": FONT,
            "font.size": 12,
            "text.color": TEXT,
            "axes.labelcolor": MUTED,
            "axes.edgecolor": GRID,
            "xtick.color": MUTED,
            "ytick.color": MUTED,
        }
    ):
        figure = Figure(figsize=SIZE_INCHES, dpi=DPI, facecolor=BACKGROUND)
        # Fixed margins, not a layout engine: measuring every label first doubled the time.
        # Names sit above their bars, so no margin depends on how long a name is.
        weekly, authors = figure.subplots(
            1,
            2,
            width_ratios=(2.1, 1),
            gridspec_kw={"left": 0.08, "right": 0.98, "bottom": 0.13, "top": 0.84, "wspace": 0.1},
        )
        figure.suptitle(_drawable(chart.title), fontsize=14, color=TEXT, parse_math=False)
        for axes in (weekly, authors):
            axes.set_facecolor(BACKGROUND)
            for side in ("top", "right"):
                axes.spines[side].set_visible(False)
        _draw_weeks(weekly, chart.weeks)
        _draw_authors(authors, chart.authors)
        out = io.BytesIO()
        # No "Software" stamp: the same chart gives the same bytes.
        figure.savefig(out, format="png", facecolor=BACKGROUND, metadata={"Software": None})
    return out.getvalue()


def _draw_weeks(axes: Axes, weeks: Sequence[WeekCount]) -> None:
    from matplotlib import dates

    axes.set_title("messages per week", fontsize=12, color=MUTED, loc="left")
    axes.grid(axis="y", color=GRID, linewidth=0.8)
    axes.set_axisbelow(True)
    if not weeks:
        axes.text(0.5, 0.5, "no messages", ha="center", transform=axes.transAxes, color=MUTED)
        return
    # matplotlib.dates is untyped: its calls are marked for mypy.
    starts: list[float] = [dates.date2num(w.week) for w in weeks]  # type: ignore[no-untyped-call]
    counts = [w.message_count for w in weeks]
    if len(weeks) <= BARS_MAX:
        axes.bar(starts, counts, width=6, align="edge", color=WEEKS)
    else:
        edges = [*starts, starts[-1] + 7]
        axes.stairs(counts, edges, fill=True, color=WEEKS)
    locator = dates.AutoDateLocator(minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.set_xlim(starts[0], starts[-1] + 7)
    axes.set_ylim(0, max(max(counts), 1) * 1.08)
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")


def _draw_authors(axes: Axes, authors: Sequence[AuthorCount]) -> None:
    axes.set_title("top authors", fontsize=12, color=MUTED, loc="left")
    axes.set_xticks([])
    axes.set_yticks([])
    for side in ("left", "bottom"):
        axes.spines[side].set_visible(False)
    # Rank 1 on top; fewer than five authors keep the rows' size of five.
    axes.set_ylim(max(len(authors), 5) - 0.4, -0.6)
    if not authors:
        return
    top = max(a.message_count for a in authors)
    axes.set_xlim(0, top)
    for rank, author in enumerate(authors):
        # Each row: the name and count on one line, the bar under them.
        axes.text(0, rank - 0.12, _name(author), color=TEXT, va="bottom", parse_math=False)
        axes.text(
            top, rank - 0.12, f"{author.message_count:,}", color=TEXT, va="bottom", ha="right"
        )
        axes.barh(rank + 0.14, author.message_count, height=0.28, color=AUTHORS)


def _name(author: AuthorCount) -> str:
    drawable = " ".join(_drawable(author.name or author.author_id).split())
    return _cut(drawable or author.author_id)


def _cut(name: str, limit: int = NAME_SHOWN) -> str:
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


def _drawable(text: str) -> str:
    """`text` without the characters the bundled font has no glyph for."""
    glyphs = _glyphs()
    return "".join(c for c in text if ord(c) in glyphs)


@functools.cache
def _glyphs() -> frozenset[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_manager.findfont(FONT)).get_charmap())
