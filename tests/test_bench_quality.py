"""The quality benchmark's arithmetic: token F1 and the stratified estimate."""

import math

import pytest

from bench.quality import _weighted, token_f1


def test_token_f1_ignores_case_punctuation_and_articles() -> None:
    assert token_f1("The Adoption agencies!", "adoption agencies") == 1.0
    assert token_f1("shelters", "adoption agencies") == 0.0
    # "dog" is the one shared token: precision 1/2, recall 1/3.
    assert token_f1("a cat and a dog", "two cats and a dog") == pytest.approx(0.4)


def test_weighted_mean_follows_each_groups_share_of_the_population() -> None:
    # 30 of 40 questions are of the first kind: the estimate leans to its mean.
    mean, error = _weighted([(30, [1.0, 1.0, 0.0, 0.0]), (10, [0.0, 0.0, 0.0, 0.0])])
    assert mean == pytest.approx(0.75 * 0.5)
    assert error == pytest.approx(math.sqrt(0.75**2 * (1 / 3) / 4))


def test_weighted_skips_groups_without_samples() -> None:
    mean, error = _weighted([(5, [0.4, 0.6]), (100, [])])
    assert mean == pytest.approx(0.5)
    assert error == pytest.approx(0.1)
    assert _weighted([]) == (0.0, 0.0)
