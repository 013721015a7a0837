"""Relative dates in a quoted message, resolved against the message's own date.

"We adopted a puppy yesterday!" sent on 8 May 2023 answers "when did they
adopt?" only once "yesterday" is 7 May 2023. Small models do not do that sum
reliably even when told how (measured on LoCoMo's temporal questions), so the
quote does it for them: `yesterday (7 May 2023)`, `last week (the week before
8 May 2023)`, `last year (2022)`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_RELATIVE = re.compile(
    r"\b(?:(?P<simple>yesterday|today|tonight|tomorrow|this (?:morning|afternoon|evening)"
    r"|last (?:night|week|weekend|month|year)|this (?:week|weekend|month|year)"
    r"|next (?:week|month|year))"
    r"|(?P<count>\d{1,2}|a|an|one|two|three|four|five|six) (?P<unit>day|week|month|year)s? ago)\b",
    re.I,
)


def day(when: datetime) -> str:
    """A date as people write it: 8 May 2023."""
    return f"{when.day} {when:%B %Y}"


def resolve(text: str, sent: datetime) -> str:
    """`text` with each relative time word followed by the date it means, in brackets."""

    def annotate(match: re.Match[str]) -> str:
        meaning = _meaning(match, sent)
        return f"{match.group(0)} ({meaning})" if meaning else match.group(0)

    return _RELATIVE.sub(annotate, text)


def _meaning(match: re.Match[str], sent: datetime) -> str | None:
    simple = (match.group("simple") or "").lower()
    if simple:
        if (
            simple in ("today", "tonight")
            or simple.startswith("this m")
            or simple
            in (
                "this afternoon",
                "this evening",
            )
        ):
            return day(sent)
        fixed = {
            "yesterday": day(sent - timedelta(days=1)),
            "last night": day(sent - timedelta(days=1)),
            "tomorrow": day(sent + timedelta(days=1)),
            "last week": f"the week before {day(sent)}",
            "last weekend": f"the weekend before {day(sent)}",
            "this week": f"the week of {day(sent)}",
            "this weekend": f"the weekend of {day(sent)}",
            "next week": f"the week after {day(sent)}",
            "last month": f"{(sent.replace(day=1) - timedelta(days=1)):%B %Y}",
            "this month": f"{sent:%B %Y}",
            "next month": f"{(sent.replace(day=28) + timedelta(days=4)):%B %Y}",
            "last year": str(sent.year - 1),
            "this year": str(sent.year),
            "next year": str(sent.year + 1),
        }
        return fixed.get(simple)
    raw = match.group("count").lower()
    count = _NUMBERS.get(raw) or int(raw)
    unit = match.group("unit").lower()
    if unit == "year":
        return str(sent.year - count)
    if unit == "month":
        return f"{(sent - timedelta(days=30 * count)):%B %Y}"
    days = count * (7 if unit == "week" else 1)
    return f"around {day(sent - timedelta(days=days))}"
