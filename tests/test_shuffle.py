import pytest

from slr.shuffle import make_permutation, shannon_entropy, sweep_permutations


def test_worked_example() -> None:
    assert shannon_entropy([2, 0, 3, 1]) == pytest.approx(1.5)


def test_original_projects_committed_value() -> None:
    perm = [6, 3, 0, 7, 10, 15, 2, 12, 14, 9, 8, 5, 4, 13, 11, 1]
    assert shannon_entropy(perm) == pytest.approx(3.3278, abs=1e-4)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_identity_and_reversal_score_zero(n: int) -> None:
    assert shannon_entropy(list(range(n))) == 0.0
    assert shannon_entropy(list(reversed(range(n)))) == 0.0


def test_permutation_is_seeded_and_complete() -> None:
    assert make_permutation(16, 3) == make_permutation(16, 3)
    assert make_permutation(16, 3) != make_permutation(16, 4)
    assert sorted(make_permutation(16, 3)) == list(range(16))


def test_sweep_spans_low_to_high_entropy() -> None:
    perms = sweep_permutations(16, 24, seed=0)
    assert len(perms) == 24 and all(sorted(p) == list(range(16)) for p in perms)
    assert all(p != list(range(16)) for p in perms)  # every permutation really moves frames
    entropies = [shannon_entropy(p) for p in perms]
    assert min(entropies) < 2.0 and max(entropies) > 3.0
    assert sweep_permutations(16, 24, seed=0) == perms
