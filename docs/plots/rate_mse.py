#!/usr/bin/env python3
"""Draws docs/rate-mse.svg: MSE against rate for every registry code of one head dim, the scalar
(k = 1, TurboQuant) codes, and the 4^-b bound, from `fibquant-gen list --json` (no dependencies):

    cargo run --release -q -p fibquant-gen -- list --json | python3 docs/plots/rate_mse.py 64 > docs/rate-mse.svg
"""
import json
import math
import sys

dim = int(sys.argv[1]) if len(sys.argv) > 1 else 64
rows = [r for r in json.load(sys.stdin) if r["dim"] == dim]
W, H, L, R, T, B = 640, 400, 70, 20, 30, 50
x_lo, x_hi = 0.0, 4.25
y_lo, y_hi = -25.0, 0.0  # MSE in dB


def px(b):
    return L + (b - x_lo) / (x_hi - x_lo) * (W - L - R)


def py(mse):
    db = 10 * math.log10(mse)
    return T + (y_hi - db) / (y_hi - y_lo) * (H - T - B)


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
for b in range(0, 5):
    out.append(f'<line x1="{px(b):.1f}" y1="{T}" x2="{px(b):.1f}" y2="{H - B}" stroke="#ddd"/>')
    out.append(f'<text x="{px(b):.1f}" y="{H - B + 16}" text-anchor="middle">{b}</text>')
for db in range(-25, 1, 5):
    y = T + (y_hi - db) / (y_hi - y_lo) * (H - T - B)
    out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{db} dB</text>')
out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">rate b (bits per coordinate)</text>')
out.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">normalized MSE</text>')
bound = " ".join(f"{px(b):.1f},{py(4.0 ** -b):.1f}" for b in [i / 20 for i in range(1, 86)])
out.append(f'<polyline points="{bound}" fill="none" stroke="#888" stroke-dasharray="4 3"/>')
colors = {1: "#d62728", 2: "#ff7f0e", 3: "#9467bd", 4: "#1f77b4", 8: "#2ca02c"}
for k in sorted({r["k"] for r in rows}):
    pts = sorted((r["rate_bits"], r["mse"]) for r in rows if r["k"] == k and r["rate_bits"] <= x_hi)
    path = " ".join(f"{px(b):.1f},{py(m):.1f}" for b, m in pts)
    c = colors.get(k, "black")
    out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
    for b, m in pts:
        out.append(f'<circle cx="{px(b):.1f}" cy="{py(m):.1f}" r="2.5" fill="{c}"/>')
legend = [(f"k = {k}" + (" (scalar, TurboQuant)" if k == 1 else ""), colors.get(k, "black"), False)
          for k in sorted({r["k"] for r in rows})] + [("4^-b (Gaussian rate-distortion bound)", "#888", True)]
for i, (label, c, dashed) in enumerate(legend):
    y = T + 14 + 16 * i
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    out.append(f'<line x1="{W - R - 250}" y1="{y}" x2="{W - R - 230}" y2="{y}" stroke="{c}" stroke-width="1.5"{dash}/>')
    out.append(f'<text x="{W - R - 224}" y="{y + 4}">{label}</text>')
out.append(f'<text x="{L}" y="18">d = {dim}: every registry code (fibquant-gen list)</text>')
out.append("</svg>")
print("\n".join(out))
