//! `fibquant-gen bench --markdown`: the README's speed tables, and the targets checked
//! against the measured numbers, printed from one bench report.

use serde_json::{Map, Value};
use std::fmt::Write;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Markdown tables for the sections present in `report` (the object `bench --json` prints).
pub fn markdown(report: &Map<String, Value>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Kernels: `{}`; medians of {} runs; one thread except the last table.\n",
        report.get("kernels").map_or("?", s),
        report.get("repeats").map_or(0, u)
    );
    if let Some(Value::Array(rows)) = report.get("codec") {
        codec_tables(&mut out, rows);
    }
    if let Some(Value::Array(rows)) = report.get("fast_encoder") {
        fast_encoder_table(&mut out, rows);
    }
    if let Some(Value::Array(rows)) = report.get("exact_search") {
        exact_search_table(&mut out, rows);
    }
    if let Some(Value::Array(rows)) = report.get("attention") {
        // One table per head dimension: the rows of each start with its memcpy row (reports
        // from before the d = 128 rows hold one).
        let mut start = 0;
        for end in 1..=rows.len() {
            if end == rows.len() || rows[end]["section"] == "memcpy" {
                attention_table(&mut out, &rows[start..end]);
                start = end;
            }
        }
    }
    if let Some(Value::Array(rows)) = report.get("parallel") {
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
                r["k"],
                r["n"],
                f(&r["single_vectors_per_second"]),
                f(&r["parallel_vectors_per_second"]),
                r["threads"],
                f(&r["speedup"])
            );
        }
        out.push('\n');
    }
    out
}

fn codec_tables(out: &mut String, rows: &[Value]) {
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
        let (d, b) = (u(&r["dim"]), f(&r["rate_bits"]));
        let bytes = u(&r["bytes_per_vector"]);
        let _ = writeln!(
            out,
            "| {d} | {b} | {} | {bytes} | {:.2}x | {:.0}x | {:.0} | {:.0} | {:.5} |",
            s(&r["impl"]),
            (2 * d) as f64 / bytes as f64,
            16.0 / b,
            f(&r["encode_ns"]),
            f(&r["decode_ns"]),
            f(&r["mse"])
        );
    }
    let peer = |d: u64, b: f64| {
        rows.iter().find(|r| {
            u(&r["dim"]) == d
                && f(&r["rate_bits"]) == b
                && s(&r["impl"]).starts_with("turboquant-rs")
        })
    };
    if !rows
        .iter()
        .any(|r| s(&r["impl"]).starts_with("turboquant-rs"))
    {
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
    for r in rows
        .iter()
        .filter(|r| s(&r["impl"]).starts_with("fibquant"))
    {
        let (d, b) = (u(&r["dim"]), f(&r["rate_bits"]));
        if let Some(p) = peer(d, b) {
            let code = format!(
                "d={d} b={b} {}",
                s(&r["impl"]).trim_start_matches("fibquant ")
            );
            let ratios = [
                f(&r["encode_ns"]) / f(&p["encode_ns"]),
                f(&r["decode_ns"]) / f(&p["decode_ns"]),
            ];
            for (w, ratio) in worst.iter_mut().zip(ratios) {
                if ratio > w.0 {
                    *w = (ratio, code.clone());
                }
            }
            let _ = writeln!(
                out,
                "| {d} | {b} | {} | {:.2} | {:.2} | {:.3} |",
                s(&r["impl"]).trim_start_matches("fibquant "),
                ratios[0],
                ratios[1],
                f(&r["mse"]) / f(&p["mse"])
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
    let mut rates: Vec<(u64, f64)> = rows
        .iter()
        .filter(|r| s(&r["impl"]).starts_with("turboquant-rs"))
        .map(|r| (u(&r["dim"]), f(&r["rate_bits"])))
        .collect();
    rates.dedup();
    for (d, b) in rates {
        let Some(p) = peer(d, b) else { continue };
        let best = rows
            .iter()
            .filter(|r| {
                s(&r["impl"]).starts_with("fibquant")
                    && u(&r["dim"]) == d
                    && f(&r["rate_bits"]) == b
                    && f(&r["encode_ns"]) <= f(&p["encode_ns"])
                    && f(&r["decode_ns"]) <= f(&p["decode_ns"])
            })
            .min_by(|x, y| f(&x["mse"]).total_cmp(&f(&y["mse"])));
        let _ = match best {
            Some(r) => writeln!(
                out,
                "- d={d} b={b}: {} (encode {:.2}, decode {:.2}, MSE {:.3} of theirs): met",
                s(&r["impl"]).trim_start_matches("fibquant "),
                f(&r["encode_ns"]) / f(&p["encode_ns"]),
                f(&r["decode_ns"]) / f(&p["decode_ns"]),
                f(&r["mse"]) / f(&p["mse"])
            ),
            None => writeln!(out, "- d={d} b={b}: no code: NOT met"),
        };
    }
    out.push('\n');
}

fn exact_search_table(out: &mut String, rows: &[Value]) {
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
        let default = r
            .get("default_ns_per_block")
            .unwrap_or(&r["balls_ns_per_block"]);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.1}x | {} |",
            r["dim"],
            r["k"],
            r["n"],
            f(&r["exhaustive_ns_per_block"]),
            f(&r["balls_ns_per_block"]),
            f(default),
            percent(&r["certified"]),
            f(&r["speedup"]),
            if r["identical"] == true { "all" } else { "NO" }
        );
    }
    out.push('\n');
}

/// A fraction as a percentage, `-` where absent.
fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.1} %", 100.0 * x))
}

fn fast_encoder_table(out: &mut String, rows: &[Value]) {
    // Reports from before the shortlists have no "method" and only inverted-file rows.
    let ivf: Vec<&Value> = rows.iter().filter(|r| r["method"] != "encoder").collect();
    let encoder: Vec<&Value> = rows.iter().filter(|r| r["method"] == "encoder").collect();
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
            r["dim"],
            r["k"],
            r["n"],
            r["probes"],
            if r["default"] == true {
                " (default)"
            } else {
                ""
            },
            f(&r["exhaustive_ns_per_block"]),
            f(&r["ivf_ns_per_block"]),
            f(&r["speedup"]),
            f(&r["mse_ivf"]),
            f(&r["loss_db"])
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
                r["dim"],
                r["k"],
                r["n"],
                f(&r["exhaustive_ns_per_block"]),
                f(&r["encoder_ns_per_block"]),
                f(&r["speedup"]),
                percent(&r["certified"]),
                f(&r["mse_encoder"]),
                f(&r["loss_db"])
            );
        }
    }
    let (targets, what): (Vec<&Value>, &str) = if encoder.is_empty() {
        let rows = ivf
            .iter()
            .copied()
            .filter(|r| r["default"] == true)
            .collect();
        (rows, "the inverted file with the default probes")
    } else {
        (encoder, "the default encoder")
    };
    let _ = writeln!(
        out,
        "\nTargets at N = 65536 with {what} (loss <= 0.05 dB, speedup >= 10x):\n"
    );
    for r in targets.iter().filter(|r| u(&r["n"]) == 65536) {
        let (loss, speedup) = (f(&r["loss_db"]), f(&r["speedup"]));
        let _ = writeln!(
            out,
            "- d={} k={}: {loss:.3} dB, {speedup:.1}x: {}",
            r["dim"],
            r["k"],
            if loss <= 0.05 && speedup >= 10.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    out.push('\n');
}

fn attention_table(out: &mut String, rows: &[Value]) {
    let memcpy = rows
        .iter()
        .find(|r| r["section"] == "memcpy")
        .map_or(f64::NAN, |r| f(&r["bytes_per_second"]));
    let att: Vec<&Value> = rows
        .iter()
        .filter(|r| r["section"] == "attention")
        .collect();
    let d = att.first().map_or(0, |r| u(&r["dim"]));
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
        if r["method"] == "decode then compute" {
            continue;
        }
        let vs = r.get("vs_fp16").map(f);
        let dtc = r.get("vs_decode_then_compute").map(f);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} |",
            r["context"],
            r["heads"],
            s(&r["method"]),
            s(&r["code"]),
            f(&r["bytes_per_key"]),
            f(&r["step_ms"]),
            f(&r["ns_per_key"]),
            f(&r["bytes_per_second"]) / 1e9,
            vs.map_or(String::new(), |v| format!("{v:.2}x")),
            dtc.map_or(String::new(), |v| format!("{v:.1}x faster"))
        );
    }
    out.push('\n');
    // The attention targets, at the longest context.
    let Some(longest) = att.iter().map(|r| u(&r["context"])).max() else {
        return;
    };
    let codes: Vec<&&Value> = att
        .iter()
        .filter(|r| u(&r["context"]) == longest && r["method"] == "on codes")
        .collect();
    let worst = |pred: &dyn Fn(f64) -> bool, key: &str| {
        codes
            .iter()
            .filter(|r| pred(f(&r["rate_bits"])))
            .min_by(|a, b| f(&a[key]).total_cmp(&f(&b[key])))
            .map(|r| (s(&r["code"]).to_string(), f(&r[key])))
    };
    let _ = writeln!(
        out,
        "Targets at {longest} keys, d = {d} (worst code in each group):\n"
    );
    for (what, pred, key, target) in [
        (
            "b <= 2, vs fp16 (target >= 1.5x)",
            &(|b: f64| b <= 2.0) as &dyn Fn(f64) -> bool,
            "vs_fp16",
            1.5,
        ),
        (
            "b <= 4, vs fp16 (target >= 1.0x)",
            &|b: f64| b <= 4.0,
            "vs_fp16",
            1.0,
        ),
        (
            "all codes, vs decode-then-compute (target >= 3x)",
            &|_: f64| true,
            "vs_decode_then_compute",
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
    let mut rates: Vec<f64> = codes.iter().map(|r| f(&r["rate_bits"])).collect();
    rates.dedup();
    for b in rates {
        let target = if b <= 2.0 { 1.5 } else { 1.0 };
        if let Some(r) = codes
            .iter()
            .filter(|r| f(&r["rate_bits"]) == b)
            .max_by(|x, y| f(&x["vs_fp16"]).total_cmp(&f(&y["vs_fp16"])))
        {
            let v = f(&r["vs_fp16"]);
            let _ = writeln!(
                out,
                "- b={b}: {v:.2}x ({}): {}",
                s(&r["code"]),
                if v >= target { "met" } else { "NOT met" }
            );
        }
    }
    out.push('\n');
}
