//! `fibquant-gen bench --markdown`: the README's speed tables, and the targets checked
//! against the measured numbers, printed from one bench report.

use crate::bench::{
    AttentionRow, AttentionStep, CodecRow, EncoderRow, ExactSearchRow, FastEncoderRow, IvfRow,
    Report,
};
use std::fmt::Write;

/// Markdown tables for the sections present in `report`.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Kernels: `{}`; medians of {} runs; one thread except the last table.\n",
        report.kernels, report.repeats
    );
    if let Some(rows) = &report.codec {
        codec_tables(&mut out, rows);
    }
    if let Some(rows) = &report.fast_encoder {
        fast_encoder_table(&mut out, rows);
    }
    if let Some(rows) = &report.exact_search {
        exact_search_table(&mut out, rows);
    }
    if let Some(rows) = &report.attention {
        // One table per head dimension: the rows of each start with its memcpy row (reports
        // from before the d = 128 rows hold one).
        let mut start = 0;
        for end in 1..=rows.len() {
            if end == rows.len() || matches!(rows[end], AttentionRow::Memcpy(_)) {
                attention_table(&mut out, &rows[start..end]);
                start = end;
            }
        }
    }
    if let Some(rows) = &report.parallel {
        let _ = writeln!(
            out,
            "**Batch encode on all cores** (`parallel` feature, d = 128):\n"
        );
        let _ = writeln!(
            out,
            "| code | 1 thread vec/s | all cores vec/s | threads | speedup |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for r in rows {
            let _ = writeln!(
                out,
                "| k={} N={} | {:.0} | {:.0} | {} | {:.2}x |",
                r.k,
                r.n,
                r.single_vectors_per_second,
                r.parallel_vectors_per_second,
                r.threads,
                r.speedup
            );
        }
        out.push('\n');
    }
    out
}

fn codec_tables(out: &mut String, rows: &[CodecRow]) {
    let _ = writeln!(
        out,
        "**Encode / decode** (ns per vector, single thread; MSE on the same vectors; bytes per \
         vector include the norm and padding, beside the paper-style `16/b` compression):\n"
    );
    let _ = writeln!(
        out,
        "| d | b | implementation | bytes/vec | vs fp16 (bytes) | 16/b | encode ns | decode ns | MSE |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (d, b) = (r.dim, r.rate_bits);
        let bytes = r.bytes_per_vector;
        let _ = writeln!(
            out,
            "| {d} | {b} | {} | {bytes} | {:.2}x | {:.0}x | {:.0} | {:.0} | {:.5} |",
            r.implementation,
            (2 * d) as f64 / bytes as f64,
            16.0 / b,
            r.encode_ns,
            r.decode_ns,
            r.mse
        );
    }
    let is_peer = |r: &CodecRow| r.implementation.starts_with("turboquant-rs");
    let peer = |d: usize, b: f64| {
        rows.iter()
            .find(|r| r.dim == d && r.rate_bits == b && is_peer(r))
    };
    if !rows.iter().any(is_peer) {
        out.push('\n');
        return;
    }
    let _ = writeln!(
        out,
        "\nRatios against `turboquant-rs` at the same d and b (ours / theirs; below 1 is faster):\n"
    );
    let _ = writeln!(
        out,
        "| d | b | code | encode ratio | decode ratio | MSE ratio |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut worst: [(f64, String); 2] = [(0.0, String::new()), (0.0, String::new())];
    let ours = |r: &&CodecRow| r.implementation.starts_with("fibquant");
    let short = |r: &CodecRow| r.implementation.trim_start_matches("fibquant ").to_string();
    for r in rows.iter().filter(ours) {
        let (d, b) = (r.dim, r.rate_bits);
        if let Some(p) = peer(d, b) {
            let code = format!("d={d} b={b} {}", short(r));
            let ratios = [r.encode_ns / p.encode_ns, r.decode_ns / p.decode_ns];
            for (w, ratio) in worst.iter_mut().zip(ratios) {
                if ratio > w.0 {
                    *w = (ratio, code.clone());
                }
            }
            let _ = writeln!(
                out,
                "| {d} | {b} | {} | {:.2} | {:.2} | {:.3} |",
                short(r),
                ratios[0],
                ratios[1],
                r.mse / p.mse
            );
        }
    }
    let _ = writeln!(
        out,
        "\nTargets against `turboquant-rs` (worst code, ratio <= 1.0 wanted):\n"
    );
    for (what, (ratio, code)) in ["encode", "decode"].iter().zip(&worst) {
        let _ = writeln!(
            out,
            "- {what}: {ratio:.2} ({code}): {}",
            if *ratio <= 1.0 { "met" } else { "NOT met" }
        );
    }
    let _ = writeln!(
        out,
        "\nPer rate, the lowest-MSE FibQuant code that is no slower than `turboquant-rs` in \
         both encode and decode:\n"
    );
    let mut rates: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| is_peer(r))
        .map(|r| (r.dim, r.rate_bits))
        .collect();
    rates.dedup();
    for (d, b) in rates {
        let Some(p) = peer(d, b) else { continue };
        let best = rows
            .iter()
            .filter(ours)
            .filter(|r| {
                r.dim == d
                    && r.rate_bits == b
                    && r.encode_ns <= p.encode_ns
                    && r.decode_ns <= p.decode_ns
            })
            .min_by(|x, y| x.mse.total_cmp(&y.mse));
        let _ = match best {
            Some(r) => writeln!(
                out,
                "- d={d} b={b}: {} (encode {:.2}, decode {:.2}, MSE {:.3} of theirs): met",
                short(r),
                r.encode_ns / p.encode_ns,
                r.decode_ns / p.decode_ns,
                r.mse / p.mse
            ),
            None => writeln!(out, "- d={d} b={b}: no code: NOT met"),
        };
    }
    out.push('\n');
}

fn exact_search_table(out: &mut String, rows: &[ExactSearchRow]) {
    let _ = writeln!(
        out,
        "**Exact search** against the exhaustive scan on the same source blocks (ns per block): \
         the ball-pruned cells (`runtime/src/balls.rs`) alone, and the default (certified \
         shortlists, `runtime/src/shortlist.rs`, then the ball search for the blocks they leave \
         open):\n"
    );
    let _ = writeln!(
        out,
        "| d | k | N | exhaustive ns | ball search ns | default ns | certified | speedup (default) | same answers |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        // Reports from before the shortlists timed the ball search as the default.
        let default = r.default_ns_per_block.unwrap_or(r.balls_ns_per_block);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.1}x | {} |",
            r.dim,
            r.k,
            r.n,
            r.exhaustive_ns_per_block,
            r.balls_ns_per_block,
            default,
            percent(r.certified),
            r.speedup,
            if r.identical { "all" } else { "NO" }
        );
    }
    out.push('\n');
}

/// A fraction as a percentage, `-` where absent.
fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1} %", 100.0 * x))
}

/// The numbers of a fast-encoder row that its target is checked on.
struct Target {
    dim: usize,
    k: usize,
    n: usize,
    loss_db: f64,
    speedup: f64,
}

fn fast_encoder_table(out: &mut String, rows: &[FastEncoderRow]) {
    let ivf: Vec<&IvfRow> = rows
        .iter()
        .filter_map(|r| match r {
            FastEncoderRow::Ivf(r) => Some(r),
            FastEncoderRow::Encoder(_) => None,
        })
        .collect();
    let encoder: Vec<&EncoderRow> = rows
        .iter()
        .filter_map(|r| match r {
            FastEncoderRow::Encoder(r) => Some(r),
            FastEncoderRow::Ivf(_) => None,
        })
        .collect();
    let _ = writeln!(
        out,
        "**Fast encoder** (inverted file, `runtime/src/ivf.rs`, alone) against exhaustive search \
         on the same source blocks (ns per block):\n"
    );
    let _ = writeln!(
        out,
        "| d | k | N | probes | exhaustive ns | IVF ns | speedup | MSE | loss dB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &ivf {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}{} | {:.0} | {:.0} | {:.1}x | {:.5} | {:.3} |",
            r.dim,
            r.k,
            r.n,
            r.probes,
            if r.default { " (default)" } else { "" },
            r.exhaustive_ns_per_block,
            r.ivf_ns_per_block,
            r.speedup,
            r.mse_ivf,
            r.loss_db
        );
    }
    if !encoder.is_empty() {
        let _ = writeln!(
            out,
            "\n**Default encoder** (`Codebook::nearest`: the orbit search of the E8 codes, exact; \
             certified shortlists where they apply, exact; then the inverted file with the \
             default probes, or the ball search below 16384 codewords) against exhaustive \
             search (ns per block):\n"
        );
        let _ = writeln!(
            out,
            "| d | k | N | exhaustive ns | encoder ns | speedup | certified | MSE | loss dB |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for r in &encoder {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.0} | {:.1}x | {} | {:.5} | {:.3} |",
                r.dim,
                r.k,
                r.n,
                r.exhaustive_ns_per_block,
                r.encoder_ns_per_block,
                r.speedup,
                percent(r.certified),
                r.mse_encoder,
                r.loss_db
            );
        }
    }
    let (targets, what): (Vec<Target>, &str) = if encoder.is_empty() {
        let rows = ivf
            .iter()
            .filter(|r| r.default)
            .map(|r| Target {
                dim: r.dim,
                k: r.k,
                n: r.n,
                loss_db: r.loss_db,
                speedup: r.speedup,
            })
            .collect();
        (rows, "the inverted file with the default probes")
    } else {
        let rows = encoder
            .iter()
            .map(|r| Target {
                dim: r.dim,
                k: r.k,
                n: r.n,
                loss_db: r.loss_db,
                speedup: r.speedup,
            })
            .collect();
        (rows, "the default encoder")
    };
    let _ = writeln!(
        out,
        "\nTargets at N = 65536 with {what} (loss <= 0.05 dB, speedup >= 10x):\n"
    );
    for t in targets.iter().filter(|t| t.n == 65536) {
        let (loss, speedup) = (t.loss_db, t.speedup);
        let _ = writeln!(
            out,
            "- d={} k={}: {loss:.3} dB, {speedup:.1}x: {}",
            t.dim,
            t.k,
            if loss <= 0.05 && speedup >= 10.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    out.push('\n');
}

fn attention_table(out: &mut String, rows: &[AttentionRow]) {
    let memcpy = rows
        .iter()
        .find_map(|r| match r {
            AttentionRow::Memcpy(m) => Some(m.bytes_per_second),
            AttentionRow::Step(_) => None,
        })
        .unwrap_or(f64::NAN);
    let att: Vec<&AttentionStep> = rows
        .iter()
        .filter_map(|r| match r {
            AttentionRow::Step(s) => Some(s),
            AttentionRow::Memcpy(_) => None,
        })
        .collect();
    let d = att.first().map_or(0, |r| r.dim);
    let _ = writeln!(
        out,
        "**Attention, one decode step over all heads** (d = {d}, one query per head, K and V of \
         every head; memcpy on the same machine in the same run: {:.2} GB/s; \"vs fp16\" is the \
         median over rounds of fp16 time / method time, each round timing both back to back):\n",
        memcpy / 1e9
    );
    let _ = writeln!(
        out,
        "| context | heads | method | code | bytes/key | step ms | ns/key | GB/s read | vs fp16 | codes vs decode-then-compute |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &att {
        if r.method == "decode then compute" {
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} |",
            r.context,
            r.heads,
            r.method,
            r.code,
            r.bytes_per_key,
            r.step_ms,
            r.ns_per_key,
            r.bytes_per_second / 1e9,
            r.vs_fp16.map_or(String::new(), |v| format!("{v:.2}x")),
            r.vs_decode_then_compute
                .map_or(String::new(), |v| format!("{v:.1}x faster"))
        );
    }
    out.push('\n');
    // The attention targets, at the longest context.
    let Some(longest) = att.iter().map(|r| r.context).max() else {
        return;
    };
    let codes: Vec<&AttentionStep> = att
        .iter()
        .copied()
        .filter(|r| r.context == longest && r.method == "on codes")
        .collect();
    let rate = |r: &AttentionStep| r.rate_bits.unwrap_or(f64::NAN);
    // A missing ratio counts as NaN, which `total_cmp` orders above every number.
    let vs_fp16 = |r: &AttentionStep| r.vs_fp16.unwrap_or(f64::NAN);
    let vs_dtc = |r: &AttentionStep| r.vs_decode_then_compute.unwrap_or(f64::NAN);
    let worst = |pred: &dyn Fn(f64) -> bool, key: &dyn Fn(&AttentionStep) -> f64| {
        codes
            .iter()
            .filter(|r| pred(rate(r)))
            .min_by(|a, b| key(a).total_cmp(&key(b)))
            .map(|r| (r.code.clone(), key(r)))
    };
    let _ = writeln!(
        out,
        "Targets at {longest} keys, d = {d} (worst code in each group):\n"
    );
    for (what, pred, key, target) in [
        (
            "b <= 2, vs fp16 (target >= 1.5x)",
            &(|b: f64| b <= 2.0) as &dyn Fn(f64) -> bool,
            &vs_fp16 as &dyn Fn(&AttentionStep) -> f64,
            1.5,
        ),
        (
            "b <= 4, vs fp16 (target >= 1.0x)",
            &|b: f64| b <= 4.0,
            &vs_fp16,
            1.0,
        ),
        (
            "all codes, vs decode-then-compute (target >= 3x)",
            &|_: f64| true,
            &vs_dtc,
            3.0,
        ),
    ] {
        if let Some((code, v)) = worst(pred, key) {
            let _ = writeln!(
                out,
                "- {what}: {v:.2}x ({code}): {}",
                if v >= target { "met" } else { "NOT met" }
            );
        }
    }
    let _ = writeln!(
        out,
        "\nPer rate at {longest} keys, d = {d}, the fastest code against fp16 (target 1.5x at \
         b <= 2, 1.0x above):\n"
    );
    let mut rates: Vec<f64> = codes.iter().map(|r| rate(r)).collect();
    rates.dedup();
    for b in rates {
        let target = if b <= 2.0 { 1.5 } else { 1.0 };
        if let Some(r) = codes
            .iter()
            .filter(|r| rate(r) == b)
            .max_by(|x, y| vs_fp16(x).total_cmp(&vs_fp16(y)))
        {
            let v = vs_fp16(r);
            let _ = writeln!(
                out,
                "- b={b}: {v:.2}x ({}): {}",
                r.code,
                if v >= target { "met" } else { "NOT met" }
            );
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_reports_parse_and_render() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bench");
        let mut seen = 0;
        for file in std::fs::read_dir(dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                let report: Report = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(
                    markdown(&report).contains("**Attention"),
                    "{}",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(seen > 0, "no reports under {dir}");
    }
}
