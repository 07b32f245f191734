//! A hand-written SVG of the memory-fidelity frontier: honest compression ratio (log x axis)
//! against attention-output cosine (y axis), vector codes versus the scalar (`k = 1`) code.
//!
//! Kept over plotters: plotters' SVG backend lays out and styles its text and ticks its own way,
//! so the committed `docs/attention-frontier.svg` would change for no change in the data, and the
//! one chart this crate draws takes 200 lines without a dependency.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One measured code.
#[derive(Debug, Clone)]
pub struct FrontierPoint {
    /// Block size `k` (1 = scalar code).
    pub k: usize,
    /// Codebook size `N`.
    pub n: usize,
    /// Nominal rate, bits per coordinate.
    pub rate_bits: f64,
    /// fp16 bytes over slot bytes (norm included).
    pub ratio: f64,
    /// Mean attention-output cosine.
    pub cosine: f64,
}

const W: f64 = 760.0;
const H: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// Renders the frontier. `title` goes on top (escape-free text expected).
pub fn render(points: &[FrontierPoint], title: &str) -> String {
    let xmin = points
        .iter()
        .map(|p| p.ratio)
        .fold(f64::INFINITY, f64::min)
        .min(2.0);
    let xmax = points.iter().map(|p| p.ratio).fold(0.0, f64::max).max(4.0);
    let (lx0, lx1) = ((xmin / 1.15).log2(), (xmax * 1.15).log2());
    let ymin_data = points.iter().map(|p| p.cosine).fold(1.0, f64::min);
    let ystep = if ymin_data > 0.9 { 0.01 } else { 0.05 };
    let y0 = ((ymin_data - ystep * 0.5) / ystep).floor() * ystep;
    let (y0, y1) = (y0.max(-1.0), 1.0 + ystep * 0.2);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |r: f64| LEFT + (r.log2() - lx0) / (lx1 - lx0) * pw;
    let sy = |c: f64| TOP + (y1 - c) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">{title}</text>"#,
        W / 2.0
    );
    // Grid and ticks.
    let mut t = 2f64.powf(lx0.ceil());
    while t.log2() <= lx1 {
        let x = sx(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}x</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
        t *= 2.0;
    }
    let n_y = ((y1 - y0) / ystep).floor() as usize;
    for i in 0..=n_y {
        let c = y0 + i as f64 * ystep;
        let y = sy(c);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{c:.2}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">compression vs fp16, honest bytes (2·64 / slot bytes incl. fp16 norm), log scale</text>"#,
        LEFT + pw / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">attention-output cosine (mean over layers, heads, positions)</text>"#,
        TOP + ph / 2.0
    );

    // All vector codes (k >= 2) as small grey dots.
    for p in points.iter().filter(|p| p.k >= 2) {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#999"><title>{}x{} ({} b): {:.4}</title></circle>"##,
            sx(p.ratio),
            sy(p.cosine),
            p.k,
            p.n,
            p.rate_bits,
            p.cosine
        );
    }
    // Best vector code per rate, and the scalar code, as lines.
    let mut best: BTreeMap<u64, &FrontierPoint> = BTreeMap::new();
    for p in points.iter().filter(|p| p.k >= 2) {
        let key = (p.rate_bits * 1e6).round() as u64;
        if best.get(&key).is_none_or(|b| p.cosine > b.cosine) {
            best.insert(key, p);
        }
    }
    let mut best: Vec<&FrontierPoint> = best.into_values().collect();
    best.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let mut scalar: Vec<&FrontierPoint> = points.iter().filter(|p| p.k == 1).collect();
    scalar.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    for (series, color) in [(&best, "#1f77b4"), (&scalar, "#d62728")] {
        let path: Vec<String> = series
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.ratio), sy(p.cosine)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for p in series {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"><title>{}x{} ({} b): {:.4}</title></circle>"#,
                sx(p.ratio),
                sy(p.cosine),
                p.k,
                p.n,
                p.rate_bits,
                p.cosine
            );
        }
    }
    // Legend (bottom left of the plot area).
    let (lx, ly) = (LEFT + 14.0, H - BOTTOM - 62.0);
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="300" height="56" fill="white" stroke="#999"/>"##,
        lx - 6.0,
        ly - 14.0
    );
    for (i, (color, r, text)) in [
        (
            "#1f77b4",
            4.0,
            "FibQuant, best vector code (k ≥ 2) per rate",
        ),
        ("#d62728", 4.0, "scalar code k = 1 (TurboQuant Lloyd-Max)"),
        ("#999", 2.5, "every embedded vector code"),
    ]
    .iter()
    .enumerate()
    {
        let y = ly + i as f64 * 17.0;
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{color}"/><text x="{:.1}" y="{:.1}">{text}</text>"#,
            lx + 6.0,
            y - 4.0,
            lx + 18.0,
            y
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_series_and_labels() {
        let pts = [
            FrontierPoint {
                k: 1,
                n: 16,
                rate_bits: 4.0,
                ratio: 128.0 / 34.0,
                cosine: 0.995,
            },
            FrontierPoint {
                k: 1,
                n: 4,
                rate_bits: 2.0,
                ratio: 128.0 / 18.0,
                cosine: 0.95,
            },
            FrontierPoint {
                k: 2,
                n: 256,
                rate_bits: 4.0,
                ratio: 128.0 / 34.0,
                cosine: 0.996,
            },
            FrontierPoint {
                k: 4,
                n: 256,
                rate_bits: 2.0,
                ratio: 128.0 / 18.0,
                cosine: 0.96,
            },
        ];
        let svg = render(&pts, "test");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("log scale") && svg.contains("attention-output cosine"));
    }
}
