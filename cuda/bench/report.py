"""Tables of a GPU run: fibquant-cuda-bench's JSON beside PyTorch SDPA's, as Markdown.

    python3 cuda/bench/report.py docs/gpu/h200/bench.json docs/gpu/h200/sdpa.json > docs/gpu/h200/tables.md

Per head dim and GQA group, one row per (context, batch): SDPA's time, then for the in-crate
fp16 kernel and each code rate the time, the speedup over SDPA, the speedup over the in-crate
fp16 kernel and the fraction of the copy bandwidth at which the step reads its cache bytes.
Then the issue's targets, checked row by row.
"""
import json
import sys


def main():
    bench = json.load(open(sys.argv[1]))
    sdpa = json.load(open(sys.argv[2]))
    base = {(r["dim"], r["group"], r["context"], r["batch"]): r["us_per_step"] for r in sdpa["rows"]}
    rows = {(r["dim"], r["group"], r["context"], r["batch"], r["bits"]): r for r in bench["rows"]}
    copy = bench["copy_bandwidth_bytes_per_s"]
    print(f"Device: {bench['device']}; copy bandwidth (device-to-device, read + write) "
          f"{copy / 1e9:.0f} GB/s; PyTorch {sdpa['torch']}. Times in microseconds per decode step "
          f"(8 kv heads per sequence); `xS` = speedup over SDPA, `xF` = over the in-crate fp16 "
          f"kernel, `%` = cache bytes read per second over the copy bandwidth.\n")
    codes = sorted({r["bits"] for r in bench["rows"]})
    names = {b: ("fp16 (ours)" if b == 0 else next(r["code"] for r in bench["rows"] if r["bits"] == b)
                 + f" ({b:g} b)") for b in codes}
    misses = []
    for d in sorted({r["dim"] for r in bench["rows"]}, reverse=True):
        for g in sorted({r["group"] for r in bench["rows"]}, reverse=True):
            print(f"### d = {d}, GQA {g}:1\n")
            print("| context | batch | SDPA | " + " | ".join(names[b] for b in codes) + " |")
            print("|---|---|---|" + "---|" * len(codes))
            for ctx in sorted({r["context"] for r in bench["rows"]}):
                for batch in sorted({r["batch"] for r in bench["rows"]}):
                    key = (d, g, ctx, batch)
                    if key not in base:
                        continue
                    s = base[key]
                    f = rows.get(key + (0.0,))
                    cells = []
                    for b in codes:
                        r = rows.get(key + (b,))
                        if r is None:
                            cells.append("-")
                            continue
                        us = r["us_per_step"]
                        cell = f"{us:.0f} xS{s / us:.2f}"
                        if b != 0 and f:
                            cell += f" xF{f['us_per_step'] / us:.2f}"
                        cell += f" {100 * r['fraction_of_copy']:.0f}%"
                        cells.append(cell)
                        if b != 0:
                            if ctx >= 32768 and r["fraction_of_copy"] < 0.6:
                                misses.append("bandwidth")
                            if b == 2 and s / us < 3:
                                misses.append("b2")
                            if b == 4 and s / us < 2:
                                misses.append("b4")
                            if ctx >= 8192 and s / us < 1:
                                misses.append("slower")
                    print(f"| {ctx} | {batch} | {s:.0f} | " + " | ".join(cells) + " |")
            print()
    n = len([r for r in bench["rows"] if r["bits"] != 0 and r["context"] >= 8192])
    print("### The targets, row by row\n")
    print(f"- reads at >= 60% of the copy bandwidth from 32k context: missed in "
          f"{misses.count('bandwidth')} of the coded rows at >= 32k;")
    print(f"- b = 2 at least 3x faster than SDPA: missed in {misses.count('b2')} rows;")
    print(f"- b = 4 at least 2x faster than SDPA: missed in {misses.count('b4')} rows;")
    print(f"- never slower than SDPA from 8k context: slower in {misses.count('slower')} of the "
          f"{n} coded rows at >= 8k.")


if __name__ == "__main__":
    main()
