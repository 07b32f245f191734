"""PyTorch's scaled_dot_product_attention in fp16 on the decode shapes of fibquant-cuda-bench.

One query position per sequence; the G query heads of a kv head attend as G query rows of
that kv head (q: batch x kv_heads x G x d, k and v: batch x kv_heads x context x d), which is
GQA decode without repeating k and v. Times are the median over rounds of the mean over
back-to-back calls (CUDA events), like the Rust bench. Writes JSON.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def time_us(fn, rounds, calls):
    times = []
    for _ in range(rounds):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--contexts", default="4096,8192,16384,32768,65536,131072")
    p.add_argument("--batches", default="1,4,16,32")
    p.add_argument("--dims", default="64,128")
    p.add_argument("--groups", default="4,8")
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    ints = lambda s: [int(x) for x in s.split(",")]
    started = time.time()
    rows = []
    dev = torch.device("cuda")
    for d in ints(a.dims):
        for g in ints(a.groups):
            for ctx in ints(a.contexts):
                for b in ints(a.batches):
                    h = a.kv_heads
                    try:
                        q = torch.randn(b, h, g, d, device=dev, dtype=torch.float16)
                        k = torch.randn(b, h, ctx, d, device=dev, dtype=torch.float16)
                        v = torch.randn(b, h, ctx, d, device=dev, dtype=torch.float16)
                    except torch.cuda.OutOfMemoryError:
                        continue
                    fn = lambda: F.scaled_dot_product_attention(q, k, v)
                    fn()
                    torch.cuda.synchronize()
                    warm = time_us(fn, 1, 3)
                    calls = max(3, min(500, int(20000 / warm) + 1))
                    us = time_us(fn, a.rounds, calls)
                    nbytes = 2 * b * h * ctx * d * 2
                    rows.append(dict(dim=d, group=g, kv_heads=h, batch=b, context=ctx,
                                     us_per_step=us, cache_bytes=nbytes,
                                     bytes_per_s=nbytes / (us * 1e-6)))
                    print(f"sdpa d {d} g {g} ctx {ctx} b {b}: {us:.1f} us, "
                          f"{nbytes / (us * 1e-6) / 1e9:.0f} GB/s", flush=True)
                    del q, k, v
    out = dict(torch=torch.__version__, device=torch.cuda.get_device_name(0),
               seconds=time.time() - started, rows=rows)
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
