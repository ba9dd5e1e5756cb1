"""Frame permutations for the temporal-order test, and their Shannon entropy."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def make_permutation(num_frames: int, seed: int) -> list[int]:
    """A seeded random permutation of range(num_frames), applied identically to every clip of a set."""
    return [int(i) for i in np.random.default_rng(seed).permutation(num_frames)]


def shannon_entropy(perm: list[int]) -> float:
    """Entropy (bits) of the cyclic step sizes of `perm`, as the original project measured shuffledness.

    For p of length n, d_i = (p[(i+1) mod n] - p[i]) mod n; H = -sum q log2 q over the histogram q of d. An ordered
    clip (all steps +1) and a fully reversed one (all steps -1) both score 0; [2, 0, 3, 1] scores 1.5.
    """
    n = len(perm)
    steps = Counter((perm[(i + 1) % n] - perm[i]) % n for i in range(n))
    return -sum(c / n * math.log2(c / n) for c in steps.values()) + 0.0  # + 0.0 turns -0.0 into 0.0
