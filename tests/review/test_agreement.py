"""Agreement statistics: Cohen's kappa against scikit-learn, Krippendorff's alpha against
the published worked example and the definition, majority consensus with ties."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from safepredict import ConfigError
from safepredict.review.agreement import cohen_kappa, krippendorff_alpha, majority


@pytest.mark.parametrize("seed", range(60))
def test_kappa_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 200)), int(rng.integers(2, 6))
    a = rng.integers(0, k, size=n)
    agree = rng.random(n) < rng.random()  # from chance to near-perfect agreement
    b = np.where(agree, a, rng.integers(0, k, size=n))
    labels = np.array(list("abcdef"))
    assert cohen_kappa(a.tolist(), b.tolist()) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(labels[a].tolist(), labels[b].tolist()) == pytest.approx(
        cohen_kappa_score(labels[a], labels[b])
    )


def test_kappa_is_not_raw_agreement() -> None:
    # negative control: 90% raw agreement on a 90/10 label mix is chance level (kappa ~ 0)
    a = [0] * 90 + [1] * 10
    b = [0] * 81 + [1] * 9 + [0] * 9 + [1] * 1
    assert sum(x == y for x, y in zip(a, b, strict=True)) / 100 == 0.82
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert abs(cohen_kappa(a, b)) < 0.01
    with pytest.raises(ConfigError, match="equally long"):
        cohen_kappa([1, 2], [1])


def test_alpha_matches_krippendorffs_worked_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
    # 4 observers, 12 units, missing values; nominal alpha = 0.743.
    n = None
    table = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[v for v in col if v is not None] for col in zip(*table, strict=True)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)


def alpha_by_definition(units: list[list[int]]) -> float:
    """1 - D_o / D_e over explicit ordered pairs of pairable values (the definition)."""
    pairable = [u for u in units if len(u) > 1]
    values = [v for u in pairable for v in u]
    n = len(values)
    observed = sum(sum(x != y for x, y in permutations(u, 2)) / (len(u) - 1) for u in pairable) / n
    expected = sum(x != y for x, y in permutations(values, 2)) / (n * (n - 1))
    return 1.0 - observed / expected


@pytest.mark.parametrize("seed", range(30))
def test_alpha_equals_its_definition_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    units = [
        rng.integers(0, int(rng.integers(2, 5)), size=int(rng.integers(1, 5))).tolist()
        for _ in range(int(rng.integers(5, 40)))
    ]
    if (
        sum(len(u) for u in units if len(u) > 1) < 2
        or len({v for u in units if len(u) > 1 for v in u}) < 2
    ):
        pytest.skip("no variation to measure in this draw")
    assert krippendorff_alpha(units) == pytest.approx(alpha_by_definition(units))


def test_alpha_edge_cases() -> None:
    assert krippendorff_alpha([[1], [2]]) is None  # nothing pairable
    assert krippendorff_alpha([["a", "a"], ["a", "a", "a"]]) == 1.0  # no variation
    assert krippendorff_alpha([["a", "b"], ["b", "a"]]) < 0  # systematic disagreement


def test_majority_and_ties() -> None:
    assert majority(["1", "1", "2"]) == "1"
    assert majority(["1", "2"]) is None
    assert majority(["1", "2", "2", "1"]) is None
    assert majority(["3"]) == "3"
    assert majority([]) is None
