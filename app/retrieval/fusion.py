"""Fusing the lexical and the dense ranking into one, message by message.

Measured on long real conversations (LoCoMo; bench/quality.py has the figures),
in order of what each step gained in recall@5:

- Both rankings, not one: words alone miss paraphrases, vectors alone miss the
  one message that says the rare word.
- Scores, not ranks: reciprocal rank fusion flattens the large gap between a
  strong lexical hit and the rest, which is often the answer. Each source is
  scaled to [0, 1] over the candidates (BM25 divided by its best, cosine
  min-max) and the two are added, the lexical side weighted 0.7.
- The dense score of a message is smoothed with its neighbours' (within one
  conversation, no silence over an hour): `d[i] + 0.75 * mean(d[i-1], d[i+1])`.
  A short reply ("it was amazing!") is found through the question before it.
- A member named in the question adds 0.5 to their own messages: the question
  "what did Ana paint?" is about what Ana said, not about messages that greet her.
- A period the question names ("last week", "in May 2023") adds 0.3 to the
  messages inside it.

Only candidates are scored: the top 50 of each source, as the full ranking
would score them (measured: within 0.01 of the recall of scoring every message).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

LEXICAL_WEIGHT: Final = 0.7
NEIGHBOUR_WEIGHT: Final = 0.75
AUTHOR_BOOST: Final = 0.5
PERIOD_BOOST: Final = 0.3


@dataclass(frozen=True, slots=True)
class Candidate:
    """One message that either source found, with what fusion needs to know of it."""

    id: int
    author_id: str
    in_period: bool = False
    # The ids of its neighbours in the same conversation (no long silence between).
    neighbours: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Fused:
    """A message's fused score and the parts it came from."""

    id: int
    score: float
    lexical: float
    dense: float


@dataclass(slots=True)
class Evidence:
    """The raw scores of one search: BM25 per message and cosine similarity per message."""

    lexical: Mapping[int, float] = field(default_factory=dict)
    dense: Mapping[int, float] = field(default_factory=dict)


def fuse(
    candidates: Sequence[Candidate],
    evidence: Evidence,
    *,
    author_ids: frozenset[str] = frozenset(),
    k: int,
) -> list[Fused]:
    """The k best candidates by fused score, best first (ties: the newer message first)."""
    if not candidates or k <= 0:
        return []
    best_lexical = max((evidence.lexical.get(c.id, 0.0) for c in candidates), default=0.0)
    smoothed = {c.id: _smoothed(c, evidence.dense) for c in candidates}
    low, high = min(smoothed.values()), max(smoothed.values())
    span = high - low
    fused = []
    for candidate in candidates:
        lexical = evidence.lexical.get(candidate.id, 0.0)
        lexical = lexical / best_lexical if best_lexical > 0 else 0.0
        dense = (smoothed[candidate.id] - low) / span if span > 0 else 0.0
        score = LEXICAL_WEIGHT * lexical + dense
        if candidate.author_id in author_ids:
            score += AUTHOR_BOOST
        if candidate.in_period:
            score += PERIOD_BOOST
        fused.append(Fused(candidate.id, score, lexical, dense))
    fused.sort(key=lambda f: (f.score, f.id), reverse=True)
    return fused[:k]


def _smoothed(candidate: Candidate, dense: Mapping[int, float]) -> float:
    own = dense.get(candidate.id, 0.0)
    around = [dense[n] for n in candidate.neighbours if n in dense]
    if not around:
        return own
    return own + NEIGHBOUR_WEIGHT * sum(around) / len(around)
