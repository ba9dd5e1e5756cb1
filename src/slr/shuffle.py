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


def sweep_permutations(num_frames: int, count: int, seed: int) -> list[list[int]]:
    """`count` permutations from barely to fully shuffled, to measure accuracy as a function of entropy.

    The i-th permutation moves a random subset of k_i frame positions among themselves (a random cycle, so every
    chosen frame really moves), with k_i rising evenly from 2 to `num_frames`, so the entropies span low to high
    instead of clustering where uniformly random permutations fall (about 3-3.6 bits for 16 frames).
    """
    rng = np.random.default_rng(seed)
    perms = []
    for k in np.linspace(2, num_frames, count).round().astype(int):
        positions = rng.choice(num_frames, size=k, replace=False)
        perm = np.arange(num_frames)
        perm[positions] = np.roll(positions, 1)
        perms.append([int(i) for i in perm])
    return perms
