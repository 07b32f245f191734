"""fibquant.hf.FibQuantCache in a small randomly initialized Llama (no weights downloaded).

Skipped (reported as SKIPPED) without torch and transformers >= 4.56. Runs on the GPU when one
is there (the model on CUDA; the cache's codes live on the CPU either way). Prints the numbers
it checks (run with `-s` to see them).
"""

import inspect

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
try:
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError:  # pragma: no cover
    pytest.skip("transformers without the cache layer API", allow_module_level=True)
try:
    from fibquant.hf import FibQuantCache
except ImportError as e:  # pragma: no cover - transformers older than 4.56
    pytest.skip(f"fibquant.hf unavailable: {e}", allow_module_level=True)

import fibquant as fq

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# 168 positions: past the 4 fp16 sinks, two 64-row blocks of keys are coded, 36 rows wait.
PROMPT, STEPS = 160, 8


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=1000,
        max_position_embeddings=512,
    )
    m = LlamaForCausalLM(config).to(DEVICE, torch.float32).eval()
    return m


def cache_kwarg(model):
    """transformers 5 names the cache argument `cache`, earlier versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def run(model, cache, ids):
    """Teacher-forced: a prefill of PROMPT tokens, then STEPS one-token decode steps through
    the same cache. Returns the logits of every step, (batch, PROMPT + STEPS, vocab)."""
    kw = cache_kwarg(model)
    out = []
    with torch.no_grad():
        r = model(ids[:, :PROMPT], use_cache=True, **{kw: cache})
        out.append(r.logits)
        for t in range(PROMPT, PROMPT + STEPS):
            r = model(ids[:, t : t + 1], use_cache=True, **{kw: cache})
            out.append(r.logits)
    return torch.cat(out, 1).float()


class Fp16Layer(DynamicLayer):
    """transformers' own DynamicLayer, given keys and values rounded to fp16: the reference
    the fp16 policy must equal (same rounding, no other change)."""

    def update(self, key_states, value_states, *args, **kwargs):
        return super().update(
            key_states.half().to(key_states.dtype), value_states.half().to(value_states.dtype)
        )


def fp16_reference(model):
    from transformers.cache_utils import Cache

    return Cache(layers=[Fp16Layer() for _ in range(model.config.num_hidden_layers)])


def kl(ref, other):
    """Mean KL(ref || other) of the next-token distributions, nats."""
    p = torch.log_softmax(ref, -1)
    q = torch.log_softmax(other, -1)
    return (p.exp() * (p - q)).sum(-1).mean().item()


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 1000, (2, PROMPT + STEPS), generator=g).to(DEVICE)


@pytest.fixture(scope="module")
def reference(model, ids):
    return run(model, DynamicCache(), ids)


def versions():
    import numpy

    return f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {numpy.__version__}, device {DEVICE}"


def test_fp16_policy_equals_dynamic_cache(model, ids, reference):
    """The fp16 policy stores exactly the fp16 rounding of each key and value: the logits equal
    those of transformers' DynamicCache fed the same rounding, to float32 rounding of the
    model's sums (1e-4 of the logits' scale); against the unrounded DynamicCache they differ
    by the fp16 rounding alone (relative 2^-11 per value; bound 1e-2 of the scale)."""
    fib = FibQuantCache(fq.CachePolicy.plain("fp16", "fp16"), config=model.config)
    got = run(model, fib, ids)
    rounded = run(model, fp16_reference(model), ids)
    scale = reference.abs().max().item()
    d_rounded = (got - rounded).abs().max().item()
    d_plain = (got - reference).abs().max().item()
    print(f"\n[{versions()}] fp16 policy: max |logit diff| vs DynamicCache {d_plain:.3g}, "
          f"vs DynamicCache on fp16-rounded K/V {d_rounded:.3g} (logit scale {scale:.3g}), "
          f"KL {kl(reference, got):.3g}, effective bits {fib.effective_bits():.3f}")
    assert got.shape == reference.shape
    assert d_rounded <= 1e-4 * scale
    assert d_plain <= 1e-2 * scale
    assert fib.get_seq_length() == PROMPT + STEPS
    assert fib.effective_bits() == 16.0


def test_compressed_policies_close_and_ordered(model, ids, reference):
    """At the 4-bit preset the logits stay close to DynamicCache's, and the damage grows as
    the rate falls: KL(4 bits) < KL(2 bits) < KL(1 bit) (each code's MSE is about 4x the one
    above, 0.0067, 0.085, 0.32). The 4-bit bound, KL < 2e-3 nats, is about 10x what this
    model measured on the CPU (printed); the plain 4-bit codec (every key and value coded as
    it arrives) must stay below 5e-3, about 10x its measured KL."""
    kls, diffs, bits = {}, {}, {}
    for rate in (4.0, 2.0, 1.0):
        fib = FibQuantCache(fq.CachePolicy.preset(rate), config=model.config)
        got = run(model, fib, ids)
        assert torch.isfinite(got).all()
        kls[rate] = kl(reference, got)
        diffs[rate] = (got - reference).abs().max().item()
        bits[rate] = fib.effective_bits()
        print(f"\n[{versions()}] preset {rate} bits: max |logit diff| {diffs[rate]:.3g}, "
              f"KL {kls[rate]:.3g} nats, effective bits {bits[rate]:.3f}")
    assert kls[4.0] < kls[2.0] < kls[1.0]
    assert kls[4.0] < 2e-3
    plain = FibQuantCache(fq.CachePolicy.plain(4.0, 4.0), config=model.config)
    got = run(model, plain, ids)
    kl_plain = kl(reference, got)
    print(f"[{versions()}] plain 4-bit codec: max |logit diff| "
          f"{(got - reference).abs().max().item():.3g}, KL {kl_plain:.3g} nats, "
          f"effective bits {plain.effective_bits():.3f}")
    assert kl_plain < 5e-3
    assert plain.effective_bits() == 34 * 8 / 64
    # Bytes: the sinks and the key rows waiting for a 64-row block stay in fp16, so the cache
    # holds more than the codes alone, and less than fp16.
    assert bits[1.0] < bits[2.0] < bits[4.0] < 16.0


def test_generate_with_fibquant_cache(model, ids):
    """generate() accepts the cache; with the fp16 policy the greedy continuation is the one
    DynamicCache gives on fp16-rounded keys and values (same logits to 1e-4, checked above;
    ties closer than that could flip a token, so agreement is reported, and required for the
    first token only)."""
    kw = cache_kwarg(model)
    prompt = ids[:, :PROMPT]
    mask = torch.ones_like(prompt)
    with torch.no_grad():
        fib = model.generate(prompt, attention_mask=mask, max_new_tokens=STEPS, do_sample=False,
                             **{kw: FibQuantCache(fq.CachePolicy.plain("fp16", "fp16"), config=model.config)})
        ref = model.generate(prompt, attention_mask=mask, max_new_tokens=STEPS, do_sample=False,
                             **{kw: fp16_reference(model)})
    agree = (fib[:, PROMPT:] == ref[:, PROMPT:]).float().mean().item()
    print(f"\n[{versions()}] generate, fp16 policy: {fib.shape[1] - PROMPT} new tokens, "
          f"agreement with the fp16-rounded DynamicCache {agree:.3f}")
    assert fib.shape == ref.shape
    assert torch.equal(fib[:, PROMPT], ref[:, PROMPT])
