"""Reading a question before searching: its words, the members it names and its time words.

Measured on long real conversations (LoCoMo, see bench/quality.py), three
things decide whether the message that answers is found:

- The lexical query is an OR of the question's content words (`terms`), each
  quoted by the store, so that nothing a member types is read as FTS syntax.
- A member named in the question is not a word to match: their name pulls in
  messages that *address* them ("hey Caroline!"). It is taken out of the dense
  query and instead boosts that member's own messages.
- Time words ("yesterday", "last week", "in May 2023", "since 2024-03-01")
  become a period; messages inside it are boosted.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WORD = re.compile(r"[^\W_]+")

# Words that carry no topic: question words, pronouns, auxiliaries, fillers.
_STOPWORD_TEXT = """
    a about above after again against all am an and any are aren as at be because been before
    being below between both but by can cannot could couldn did didn do does doesn doing don
    down during each few for from further had hadn has hasn have haven having he her here hers
    herself him himself his how i if in into is isn it its itself just let me more most mustn
    my myself no nor not now of off on once only or other ought our ours ourselves out over own
    same shan she should shouldn so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was wasn we were weren what
    when where which while who whom why will with won would wouldn you your yours yourself
    yourselves also ever anything something someone thing things kind type sort get got like
    lot lots much many really still even say said tell told think know does did done ve ll re
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTH_YEAR = re.compile(r"\b(?:in\s+)?([a-z]{3,9})\.?,?\s+(\d{4})\b", re.I)
_YEAR = re.compile(r"\bin\s+(\d{4})\b", re.I)
_AGO = re.compile(r"\b(\d{1,3}|a|an|one|two|three|four|five|six)\s+(day|week|month|year)s?\s+ago\b")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open time range [start, end) in UTC; either end may be open."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, when: datetime) -> bool:
        """Whether `when` falls inside the period."""
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)


def terms(text: str) -> list[str]:
    """The content words of `text`, lower-cased, in order, without repeats."""
    found: list[str] = []
    for word in WORD.findall(text.lower()):
        if len(word) > 1 and word not in STOPWORDS and word not in found:
            found.append(word)
    return found


def _name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])" + re.escape(name) + r"(?:['\u2019]s)?(?![\w])", re.I)


def named(question: str, names: list[str]) -> list[str]:
    """The names among `names` that the question mentions as whole words."""
    return [n for n in names if n.strip() and _name_pattern(n).search(question)]


def without_names(question: str, names: list[str]) -> str:
    """The question with the given names (and their possessives) taken out, for dense search."""
    stripped = question
    for name in names:
        stripped = _name_pattern(name).sub(" ", stripped)
    stripped = re.sub(r"\s+", " ", stripped).strip()
    return stripped or question


def period_in(question: str, now: datetime) -> Period | None:
    """The time a question refers to, if it says: relative words resolved against `now`."""
    text = question.lower()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if re.search(r"\byesterday\b", text):
        return Period(today - timedelta(days=1), today)
    if re.search(r"\btoday\b", text):
        return Period(today, None)
    if re.search(r"\blast week\b", text):
        monday = today - timedelta(days=today.weekday())
        return Period(monday - timedelta(days=7), monday)
    if re.search(r"\bthis week\b", text):
        return Period(today - timedelta(days=today.weekday()), None)
    if re.search(r"\blast month\b", text):
        first = today.replace(day=1)
        previous = (first - timedelta(days=1)).replace(day=1)
        return Period(previous, first)
    if re.search(r"\bthis month\b", text):
        return Period(today.replace(day=1), None)
    if (match := _AGO.search(text)) is not None:
        count = _NUMBERS.get(match.group(1)) or int(match.group(1))
        days = {"day": 1, "week": 7, "month": 30, "year": 365}[match.group(2)] * count
        centre = today - timedelta(days=days)
        slack = timedelta(days=max(1, days // 4))
        return Period(centre - slack, centre + slack + timedelta(days=1))
    if (match := _ISO_DATE.search(text)) is not None:
        try:
            y, m, d = (int(g) for g in match.groups())
            day = datetime(y, m, d, tzinfo=UTC)
        except ValueError:
            return None
        before = re.search(r"\bbefore\s+" + re.escape(match.group(0)), text)
        after = re.search(r"\b(?:after|since)\s+" + re.escape(match.group(0)), text)
        if before:
            return Period(None, day)
        if after:
            return Period(day, None)
        return Period(day, day + timedelta(days=1))
    for match in _MONTH_YEAR.finditer(text):
        month = _MONTHS.get(match.group(1).lower())
        if month is not None:
            year = int(match.group(2))
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            return Period(start, end)
    if (match := _YEAR.search(text)) is not None:
        year = int(match.group(1))
        if 2000 <= year <= 2100:
            return Period(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    return None


_RELATIVE = re.compile(r"^(\d{1,4})([hdwmy])$")
WHEN_FORMATS = "use a date like 2026-11-01, or 24h, 3d, 2w, 6m, 1y, today or yesterday"
_UNIT_DAYS = {"h": 1 / 24, "d": 1, "w": 7, "m": 30, "y": 365}


def parse_when(value: str, now: datetime) -> datetime:
    """A `/search` after/before value: `2026-11-01`, `24h`, `3d`, `2w`, `6m`, `1y` or `yesterday`.

    Raises ValueError with a message meant for the member.
    """
    text = value.strip().lower()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        if text == "today":
            return today
        if text == "yesterday":
            return today - timedelta(days=1)
        if (match := _RELATIVE.match(text)) is not None:
            return now - timedelta(days=int(match.group(1)) * _UNIT_DAYS[match.group(2)])
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ValueError(WHEN_FORMATS) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
