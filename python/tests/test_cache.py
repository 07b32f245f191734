"""The KV cache through the bindings, against attention computed here in numpy."""

import numpy as np
import pytest

import fibquant as fq

LAYERS, QH, KVH, D = 2, 8, 2, 64
GROUP = QH // KVH


def rng_rows(rng, heads, seq, scale=1.0):
    return (scale * rng.standard_normal((heads, seq, D))).astype(np.float32)


def numpy_attention(q, k, v, first):
    """Causal softmax attention in float64: `q` (QH, seq, D) are positions first..first+seq-1
    of the sequence whose keys and values (KVH, len, D) are `k`, `v`; GQA by `GROUP`."""
    out = np.zeros(q.shape, np.float64)
    for h in range(QH):
        kh, vh = k[h // GROUP].astype(np.float64), v[h // GROUP].astype(np.float64)
        for r in range(q.shape[1]):
            visible = first + r + 1
            s = kh[:visible] @ q[h, r].astype(np.float64) / np.sqrt(D)
            w = np.exp(s - s.max())
            out[h, r] = (w / w.sum()) @ vh[:visible]
    return out


def fp16(x):
    return x.astype(np.float16).astype(np.float32)


def feed(cache, layer, rng, chunks):
    """Prefill and decode steps through append_and_attend; returns the inputs and outputs."""
    qs, ks, vs, outs = [], [], [], []
    for seq in chunks:
        q, k, v = rng_rows(rng, QH, seq), rng_rows(rng, KVH, seq), rng_rows(rng, KVH, seq)
        outs.append(cache.append_and_attend(layer, q, k, v))
        qs.append(q)
        ks.append(k)
        vs.append(v)
    return qs, np.concatenate(ks, 1), np.concatenate(vs, 1), outs


def test_fp16_cache_equals_numpy_attention():
    """With every position in fp16 the cache's attention is softmax attention over the
    fp16-rounded keys and values; what remains is f32 rounding of sums over at most 56
    positions (bound: 1e-5 of the values' scale, about 100 f32 ulps)."""
    policy = fq.CachePolicy.plain("fp16", "fp16")
    cache = fq.KvCache(LAYERS, QH, KVH, D, policy=policy)
    rng = np.random.default_rng(0)
    chunks = [40, 1, 1, 7, 1]
    qs, k, v, outs = feed(cache, 1, rng, chunks)
    assert cache.len(1) == sum(chunks) and cache.len(0) == 0
    first = 0
    for q, out in zip(qs, outs):
        want = numpy_attention(q, fp16(k), fp16(v), first)
        assert out.shape == q.shape and out.dtype == np.float32
        assert np.max(np.abs(out - want)) < 1e-5 * np.max(np.abs(v)), np.max(np.abs(out - want))
        first += q.shape[1]
    # What the cache stores is exactly the fp16 rounding of what it was given.
    rk, rv = cache.reconstruct(1)
    assert rk.shape == (KVH, sum(chunks), D)
    assert np.array_equal(rk, fp16(k)) and np.array_equal(rv, fp16(v))
    rk0, rv0 = cache.reconstruct(1, head=1)
    assert np.array_equal(rk0, rk[1]) and np.array_equal(rv0, rv[1])
    # attend over the last position again: the output of the step that appended it.
    last = cache.attend(1, qs[-1])
    assert np.array_equal(last, outs[-1])
    assert cache.effective_bits() == 16.0
    assert cache.bytes() == KVH * sum(chunks) * D * 2 * 2


def test_append_then_attend_equals_append_and_attend():
    policy = fq.CachePolicy.preset(3.0)
    a = fq.KvCache(LAYERS, QH, KVH, D, policy=policy)
    b = fq.KvCache(LAYERS, QH, KVH, D, policy=policy.with_key_scaling("none"))
    rng = np.random.default_rng(1)
    q, k, v = rng_rows(rng, QH, 70), rng_rows(rng, KVH, 70), rng_rows(rng, KVH, 70)
    # Without queries at the first append, balanced scaling has no statistics: no key scales,
    # the same cache as one without scaling.
    a.append(0, k, v)
    out_b = b.append_and_attend(0, q, k, v)
    assert np.array_equal(a.attend(0, q), out_b)


def test_attention_on_codes_equals_attention_on_the_reconstruction():
    """The cache attends on its codes (nothing decoded); that equals numpy attention over its
    own reconstruction, within the f16 codebook copy's rounding of the 4-bit code's scores
    (2^-11 of sum |q_i k_i|, a few 1e-3 here) carried through the softmax."""
    cache = fq.KvCache(LAYERS, QH, KVH, D, policy=fq.CachePolicy())
    cache.prepare()
    rng = np.random.default_rng(2)
    qs, _, _, outs = feed(cache, 0, rng, [150, 1, 1])
    rk, rv = cache.reconstruct(0)
    first = 0
    for q, out in zip(qs, outs):
        want = numpy_attention(q, rk, rv, first)
        assert np.max(np.abs(out - want)) < 2e-3, np.max(np.abs(out - want))
        first += q.shape[1]


def test_value_code_error_matches_the_registry_mse():
    """Keys in fp16, values at the 4-bit preset, plain codec: the weights are exact, so the
    output error of row r is sum_i w_ri e_i with E||e_i||^2 = mse ||v_i||^2. Over many rows,
    sum ||err||^2 / (mse * sum_r sum_i w_ri^2 ||v_i||^2) estimates 1 (errors of different
    vectors are independent: random inputs, one fixed rotation); the accepted band [0.7, 1.3]
    is about 6 standard errors of that ratio at 8 heads x 64 rows."""
    policy = fq.CachePolicy.plain("fp16", 4.0)
    cache = fq.KvCache(1, QH, KVH, D, policy=policy)
    rng = np.random.default_rng(3)
    n = 64
    q, k, v = rng_rows(rng, QH, n, scale=0.3), rng_rows(rng, KVH, n), rng_rows(rng, KVH, n)
    out = cache.append_and_attend(0, q, k, v)
    exact = numpy_attention(q, fp16(k), v, 0)
    mse = fq.best_for_rate(D, 4.0).mse
    expected = 0.0
    for h in range(QH):
        kh = fp16(k)[h // GROUP].astype(np.float64)
        vn = (v[h // GROUP].astype(np.float64) ** 2).sum(1)
        for r in range(n):
            s = kh[: r + 1] @ q[h, r] / np.sqrt(D)
            w = np.exp(s - s.max())
            w /= w.sum()
            expected += mse * (w**2 @ vn[: r + 1])
    ratio = ((out - exact) ** 2).sum() / expected
    assert 0.7 < ratio < 1.3, ratio
    # Bytes: keys in fp16 (2 D bytes a row), values in the preset's 34-byte slots.
    assert cache.bytes() == KVH * n * (2 * D + 34)


def test_policy_builder_mirrors_rust():
    p = fq.CachePolicy()
    assert p == fq.CachePolicy.preset(4.0)
    assert (p.key, p.value, p.center_keys, p.center_values) == (4.0, 4.0, True, False)
    assert (p.key_scaling, p.sinks, p.window, p.block_len, p.seed) == (
        "balanced", 4, 0, None, fq.DEFAULT_SEED)
    q = (p.with_codes((4, 256), "fp16").with_layer(1, 2.0, 2.0).with_layer(1, 3.0, "fp16")
         .with_centering(False, True).with_key_scaling("none").with_sinks(2).with_window(8)
         .with_block_len(16).with_seed(5))
    assert (q.key, q.value) == ((4, 256), "fp16")
    assert q.overrides == [(1, 3.0, "fp16")]
    assert q.codes_of(1) == (3.0, "fp16") and q.codes_of(0) == ((4, 256), "fp16")
    assert (q.center_keys, q.center_values, q.key_scaling) == (False, True, "none")
    assert (q.sinks, q.window, q.block_len, q.seed) == (2, 8, 16, 5)
    assert q.for_layer(1).overrides == [] and q.for_layer(1).key == 3.0
    assert p == fq.CachePolicy()  # builders return copies
    plain = fq.CachePolicy.plain(2.0, "fp16")
    assert (plain.sinks, plain.center_keys, plain.key_scaling) == (0, False, "none")
    # Per-layer codes reach the codecs.
    cache = fq.KvCache(LAYERS, QH, KVH, D, policy=fq.CachePolicy.preset(4.0).with_layer(1, 2.0, "fp16"))
    k1, v1 = cache.codecs(1)
    assert (k1.k, k1.n) == (8, 64497) and v1 is None
    for bad in (True, "fp8", (4,), float("nan")):
        with pytest.raises(fq.InvalidConfigError, match="must be a rate in bits"):
            fq.CachePolicy.plain(bad, 4.0)
    with pytest.raises(fq.InvalidConfigError, match="key scaling must be"):
        p.with_key_scaling("sqrt")


def test_cache_errors_change_nothing():
    cache = fq.KvCache(LAYERS, QH, KVH, D, policy=fq.CachePolicy.preset(2.0))
    rng = np.random.default_rng(4)
    q, k, v = rng_rows(rng, QH, 10), rng_rows(rng, KVH, 10), rng_rows(rng, KVH, 10)
    with pytest.raises(fq.EmptyCacheError, match="^cache layer 0: the cache holds no position"):
        cache.attend(0, q[:, :1])
    out = cache.append_and_attend(0, q, k, v)
    before = (cache.len(0), cache.bytes(), cache.reconstruct(0))
    bad = k.copy()
    bad[1, 3, 7] = np.inf
    with pytest.raises(fq.NonFiniteError, match=r"^cache layer 0, head 1, position 13: component") as e:
        cache.append(0, bad, v)
    assert (e.value.layer, e.value.head, e.value.position) == (0, 1, 13)
    with pytest.raises(fq.WrongLengthError, match=r"^keys has shape \(2, 10, 32\), expected \(2, seq, 64\)$"):
        cache.append(0, k[:, :, :32], v)
    with pytest.raises(fq.WrongLengthError, match="keys hold 10 positions, values 9"):
        cache.append(0, k, v[:, :9])
    with pytest.raises(fq.InvalidConfigError, match="^cache layer 5: invalid configuration: the cache has 2 layers"):
        cache.append(5, k, v)
    with pytest.raises(fq.InvalidConfigError, match="query value"):
        cache.append_and_attend(0, q * np.float32(1e30), k, v)
    after = (cache.len(0), cache.bytes(), cache.reconstruct(0))
    assert before[:2] == after[:2]
    assert all(np.array_equal(a, b) for a, b in zip(before[2], after[2]))
    assert np.array_equal(cache.attend(0, q), out)
    with pytest.raises(fq.InvalidConfigError, match="the cache has 2 kv heads"):
        cache.reconstruct(0, head=2)
    with pytest.raises(fq.InvalidConfigError, match="kv heads do not divide"):
        fq.KvCache(1, 6, 4, D)
    with pytest.raises(fq.InvalidConfigError, match="override for layer 3"):
        fq.KvCache(2, QH, KVH, D, policy=fq.CachePolicy().with_layer(3, 4.0, 4.0))
    with pytest.raises(fq.InvalidConfigError, match="score scale"):
        fq.KvCache(1, QH, KVH, D, score_scale=-1.0)
    assert cache.score_scale == np.float32(1 / np.sqrt(D))
    assert fq.KvCache(1, QH, KVH, D, score_scale=0.5).score_scale == 0.5
    cache.clear()
    assert cache.is_empty() and cache.len(0) == 0 and cache.effective_bits() is None
