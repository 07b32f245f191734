"""A structured candidate for the k = 8, N = 65536 rate point (b = 2): E8 lattice orbits with
one scale per orbit, and an exact encoder that never scans the codebook.

Not part of the build or the registry: a measured proposal (see the speed issue's closing notes).

The codebook: the E8 lattice points (D8 plus D8 + 1/2, even coordinate sum) of squared norm
<= 10 (56881 points), plus two whole orbits of the norm-12 shell, (3/2^5, 1/2^3) and (2^3, 0^5)
(7616 points): 64497 codewords, 21 orbits, indices fit 16 bits. An orbit is every E8 point with
the same multiset of absolute values; orbit `L` is scaled by its own `a_L`.

The exact encoder: for block `y`, sort `|y|` in descending order (`s`). Within orbit `L` (its
absolute values `l`, sorted the same way), the best codeword puts `l` on the coordinates in
the order of `|y|`, with the signs of `y`. Half-integer orbits must have an even coordinate
sum. Whether that holds depends only on how many coordinates of `y` are negative: `sum(l) -
negatives` must be even. If it is odd, the sign of the smallest product `s[7] * l[7]` is
flipped. Its score is `a_L^2 |L|^2 - 2 a_L (s . l)`, and the lowest score over the 21 orbits
wins. The script checks this against a brute-force scan. Fitting the scales is Lloyd's
centroid step restricted to one scale per orbit, on training vectors separate from the test
vectors.

    python3 docs/experiments/e8_shaped_codebook.py [D [VECTORS [FIBQUANT_GEN]]]

With the path of a built `fibquant-gen` as the third argument, the registry's k = 8, N = 65536
and k = 4, N = 256 codes are run on the same test vectors (encode, then decode) for
comparison. Needs numpy.
"""
import itertools
import os
import subprocess
import sys
import tempfile

import numpy as np

d = int(sys.argv[1]) if len(sys.argv) > 1 else 128
vectors = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
gen = sys.argv[3] if len(sys.argv) > 3 else None


def unit_vectors(seed):
    x = np.random.default_rng(seed).standard_normal((vectors, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# E8 points of squared norm <= 12, grouped into orbits by their sorted absolute values.
points = [np.array(v, float) for v in itertools.product(range(-3, 4), repeat=8)]
points += [np.array(v) for v in itertools.product(np.arange(-3.5, 4), repeat=8)]
orbits = {}
for p in points:
    if (p * p).sum() <= 12 and p.sum() % 2 == 0:
        orbits.setdefault(tuple(sorted(np.abs(p), reverse=True)), []).append(p)
extra = [tuple([1.5] * 5 + [0.5] * 3), tuple([2.0] * 3 + [0.0] * 5)]
kept = [o for o in orbits if sum(t * t for t in o) <= 10 or o in extra]
codewords = np.vstack([np.array(orbits[o]) for o in kept])
L = np.array(kept)
norm2 = (L * L).sum(1)
half = L[:, 0] % 1 != 0
print(f"d = {d}: {len(kept)} orbits, {len(codewords)} codewords, "
      f"{np.log2(len(codewords)) / 8:.4f} bits per coordinate")


def encode(y, a):
    """Lowest score a^2 |L|^2 - 2 a <y, c> over the codebook, its orbit and signed dot."""
    s = -np.sort(-np.abs(y), axis=1)
    negatives = (y < 0).sum(1)
    best = np.full(len(y), np.inf)
    orbit = np.zeros(len(y), int)
    best_dot = np.zeros(len(y))
    for i, l in enumerate(L):
        dot = (s * l).sum(1)
        if half[i]:
            odd = (l.sum() - negatives) % 2 != 0
            dot = np.where(odd, dot - 2 * s[:, 7] * l[7], dot)
        score = a[i] ** 2 * norm2[i] - 2 * a[i] * dot
        better = score < best
        best = np.where(better, score, best)
        orbit = np.where(better, i, orbit)
        best_dot = np.where(better, dot, best_dot)
    return best, orbit, best_dot


def mse_per_vector(blocks, a):
    score, _, _ = encode(blocks, a)
    return ((blocks * blocks).sum(1) + score).reshape(vectors, -1).sum(1).mean()


train = unit_vectors(99).reshape(-1, 8)
test_vectors = unit_vectors(11)
test = test_vectors.reshape(-1, 8)
base = 0.086 * np.sqrt(128 / d)
a = np.full(len(L), base)
# The encoder against a brute-force scan of the whole codebook.
sample = test[:3000]
scan = ((base * codewords) ** 2).sum(1)[None, :] - 2 * sample @ (base * codewords).T
gap = np.abs(encode(sample, a)[0] - scan.min(1)).max()
print(f"orbit encoder against the brute-force scan: largest score difference {gap:.1e}")
print(f"one scale for every orbit ({base:.4f}): MSE per vector {mse_per_vector(test, a):.5f}")
for _ in range(8):
    _, orbit, dot = encode(train, a)
    for i in range(len(L)):
        hit = orbit == i
        if hit.any() and norm2[i] > 0:
            a[i] = dot[hit].sum() / (hit.sum() * norm2[i])
print(f"one scale per orbit (fitted on other vectors): MSE per vector "
      f"{mse_per_vector(test, a):.5f}")

if gen:
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "x.npy")
        np.save(source, test_vectors.astype(np.float32))
        for k, n in [(8, 65536), (4, 256)]:
            code, back = os.path.join(tmp, "x.fq"), os.path.join(tmp, "y.npy")
            run = lambda *args: subprocess.run([gen, *args], check=True, capture_output=True)
            run("encode", "--dim", str(d), "--k", str(k), "--n", str(n),
                "--input", source, "--output", code)
            run("decode", "--input", code, "--output", back)
            err = ((test_vectors - np.load(back).astype(np.float64)) ** 2).sum(1).mean()
            print(f"registry k = {k}, N = {n} (fibquant-gen encode + decode): "
                  f"MSE per vector {err:.5f}")
