//! `fibquant-fuzz make-seeds`: writes the seed corpora (`corpus/<target>/`) from the registry
//! and the generator's writers, so that they can be regenerated when a format changes. Small
//! valid inputs, a few bytes to a few KB each.

use fibquant::codebook::format::checked_file;
use fibquant::{registry, Codebook, Codec, CodecConfig, NormFormat, RotationKind};
use fibquant_gen::{codes, npy};
use std::path::Path;

fn entry_byte(d: usize, k: usize, n: usize) -> u8 {
    let i = registry::entries()
        .position(|e| (e.dim, e.k, e.n) == (d, k, n))
        .unwrap_or_else(|| panic!("d={d} k={k} n={n} is not in the registry"));
    0x80 + i as u8
}

fn embedded_file(d: usize, k: usize, n: usize) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/codebooks");
    std::fs::read(dir.join(format!("d{d}_k{k}_n{n}.fqcb.zst"))).expect("a registry file")
}

/// The uncompressed body (header and codewords) of a codebook.
fn body(cb: &Codebook) -> Vec<u8> {
    cb.header()
        .expect("registry codebooks have headers")
        .to_bytes(cb.codewords())
}

fn vector(d: usize, seed: usize) -> Vec<f32> {
    (0..d)
        .map(|i| ((i * 7 + seed * 13) as f32 * 0.37).sin() * (1.0 + seed as f32))
        .collect()
}

/// Bytes whose [`fibquant_fuzz::moderate`] values are about `v`.
fn moderate_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .map(|x| (x * 16.0).round().clamp(-128.0, 127.0) as i8 as u8)
        .collect()
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    std::fs::write(d.join(name), bytes).expect("corpus file");
}

pub fn write_all(dir: &Path) {
    codebook_seeds(dir);
    slot_seeds(dir);
    encode_seeds(dir);
    npy_seeds(dir);
    code_file_seeds(dir);
    cache_seeds(dir);
    println!("seed corpora written to {}", dir.display());
}

fn codebook_seeds(dir: &Path) {
    let t = "codebook_file";
    for (d, k, n) in [(64, 1, 4), (64, 2, 4), (64, 4, 16), (64, 8, 4), (96, 3, 8)] {
        let mut f = vec![0u8];
        f.extend(embedded_file(d, k, n));
        write(dir, t, &format!("file-d{d}-k{k}-n{n}"), &f);
    }
    for (d, k, n) in [
        (64, 1, 16),
        (64, 2, 16),
        (64, 4, 16),
        (128, 8, 16),
        (96, 3, 8),
    ] {
        let cb = registry::codebook(d, k, n).expect("registry");
        for (mode, name) in [(1u8, "checked"), (2, "v1"), (3, "raw")] {
            if mode != 1 && (d, k) != (64, 4) {
                continue;
            }
            let mut f = vec![mode];
            f.extend(body(&cb));
            write(dir, t, &format!("body-{name}-d{d}-k{k}-n{n}"), &f);
        }
    }
    // k = 1 levels out of order: a layered plan instead of thresholds.
    let cb = registry::codebook(64, 1, 8).expect("registry");
    let mut levels = cb.codewords().to_vec();
    levels.reverse();
    let h = cb.header().expect("header").clone();
    let mut f = vec![1u8];
    f.extend(h.to_bytes(&levels));
    write(dir, t, "body-checked-k1-descending", &f);
    // The first orbits of the E8 code: an orbit plan of 240 codewords, if they are whole
    // orbits in order (else the body still exercises the refusal).
    let e8 = registry::codebook(64, 8, 64497).expect("registry");
    let mut h = e8.header().expect("header").clone();
    h.n = 240;
    let mut f = vec![1u8];
    f.extend(h.to_bytes(&e8.codewords()[..240 * 8]));
    write(dir, t, "body-checked-e8-240", &f);
    // A whole version-2 file built here (the same wrapper the generator uses).
    let cb = registry::codebook(64, 2, 8).expect("registry");
    let frame = fibquant_fuzz::raw_zstd_frame(&body(&cb));
    let mut f = vec![0u8];
    f.extend(checked_file(&frame));
    write(dir, t, "file-rawblocks-d64-k2-n8", &f);
}

fn slot_seeds(dir: &Path) {
    let t = "slots";
    let codes: [(usize, usize, usize, u8); 9] = [
        (64, 1, 16, 0x00),
        (64, 4, 16, 0x04),
        (64, 2, 256, 0x01),
        (64, 8, 64497, 0x08),
        (96, 3, 8, 0x00),
        (128, 4, 65536, 0x0c),
        (128, 4, 65536, 0x02),
        (64, 4, 4096, 0x00),
        (128, 1, 4, 0x05),
    ];
    for (d, k, n, flags) in codes {
        let norm = if flags & 1 == 1 {
            NormFormat::F32
        } else {
            NormFormat::F16
        };
        let codec = Codec::new(CodecConfig::new(d, k, n).with_norm(norm)).expect("codec");
        let rows = 3;
        let xs: Vec<f32> = (0..rows).flat_map(|r| vector(d, r)).collect();
        let mut slots = vec![0u8; rows * codec.slot_bytes()];
        codec.encode_batch(&xs, &mut slots).expect("encode");
        let q = moderate_bytes(&vector(d, 9));
        let q = &q[..q.len().min(64)];
        let mut f = vec![entry_byte(d, k, n), flags, q.len() as u8];
        f.extend_from_slice(q);
        f.extend_from_slice(&slots);
        write(dir, t, &format!("d{d}-k{k}-n{n}-f{flags:02x}"), &f);
    }
}

fn encode_seeds(dir: &Path) {
    let t = "encode";
    for (d, k, n, flags) in [
        (64, 4, 16, 0x00u8),
        (64, 1, 16, 0x03),
        (64, 8, 64497, 0x08),
        (96, 3, 8, 0x01),
        (128, 4, 65536, 0x10),
        (64, 2, 256, 0x20),
    ] {
        let mut f = vec![entry_byte(d, k, n), flags];
        if flags & 0x20 != 0 {
            f.push(14); // times 2^14: norms near the fp16 limit
        }
        if (flags >> 3) & 3 == 2 {
            for x in vector(d, 1) {
                f.extend_from_slice(&x.to_le_bytes());
            }
        } else {
            f.extend(moderate_bytes(&vector(d, 2)));
        }
        write(dir, t, &format!("d{d}-k{k}-n{n}-f{flags:02x}"), &f);
    }
}

fn npy_seeds(dir: &Path) {
    let t = "npy";
    let a = npy::Array2 {
        rows: 2,
        cols: 3,
        data: vec![1.0, -2.5, 3.25, 0.0, f32::MIN_POSITIVE, 65504.0],
    };
    write(dir, t, "f4-2x3.npy", &npy::to_bytes(&a));
    let e = npy::Array2 {
        rows: 0,
        cols: 4,
        data: vec![],
    };
    write(dir, t, "f4-0x4.npy", &npy::to_bytes(&e));
    // float64, version 1.0 and 2.0 headers, by hand (what numpy.save writes).
    for (major, name) in [(1u8, "f8-v1-1x2.npy"), (2u8, "f8-v2-1x2.npy")] {
        let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }".to_string();
        let pre = if major == 1 { 10 } else { 12 };
        while !(pre + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut f = b"\x93NUMPY".to_vec();
        f.extend_from_slice(&[major, 0]);
        if major == 1 {
            f.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            f.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        f.extend_from_slice(header.as_bytes());
        for v in [0.1f64, -1e300] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        write(dir, t, name, &f);
    }
}

fn code_file_seeds(dir: &Path) {
    let t = "code_file";
    for (d, k, n, rot, norm) in [
        (64, 4, 16, RotationKind::Auto, NormFormat::F16),
        (
            64,
            8,
            64497,
            RotationKind::Hadamard { rounds: 2 },
            NormFormat::F32,
        ),
        (96, 3, 8, RotationKind::Haar, NormFormat::F16),
        (128, 1, 4, RotationKind::Haar, NormFormat::F32),
    ] {
        let codec = Codec::new(
            CodecConfig::new(d, k, n)
                .with_rotation(rot)
                .with_norm(norm)
                .with_seed(7),
        )
        .expect("codec");
        let rows = 2;
        let xs: Vec<f32> = (0..rows).flat_map(|r| vector(d, r)).collect();
        let mut slots = vec![0u8; rows * codec.slot_bytes()];
        codec.encode_batch(&xs, &mut slots).expect("encode");
        let tag = codes::embedded_tag(d, k, n).expect("tag");
        let file = codes::to_bytes(&codec, rows, &slots, tag).expect("code file");
        for fix in [0u8, 3] {
            if fix == 3 && k != 4 {
                continue;
            }
            let mut f = vec![fix];
            f.extend_from_slice(&file);
            write(dir, t, &format!("d{d}-k{k}-n{n}-fix{fix}"), &f);
        }
        // The same slots as a version-1 file (no checksums), which still parses.
        if k == 4 {
            let v1_header = fibquant::codec::codefile::V1_HEADER_BYTES;
            let mut f = vec![1u8];
            f.extend_from_slice(&file[..v1_header]);
            f[1 + 4..1 + 8].copy_from_slice(&1u32.to_le_bytes());
            f.extend_from_slice(&file[codes::HEADER_BYTES..]);
            write(dir, t, &format!("d{d}-k{k}-n{n}-v1"), &f);
        }
    }
}

/// One cache op: opcode, layer, sequence length, value byte (how values are made: bits 0-1;
/// which length is wrong: bits 2-4; bits 5-7: 8 value bytes each), and the value bytes.
fn op(out: &mut Vec<u8>, code: u8, layer: u8, seq: u8, vb: u8, salt: u8) {
    out.extend_from_slice(&[code, layer, seq, vb]);
    let n = 1 + (vb >> 5) as usize * 8;
    out.extend((0..n).map(|i| ((i as u8).wrapping_mul(37) ^ salt).wrapping_add(salt)));
}

fn cache_seeds(dir: &Path) {
    let t = "cache";
    // (shape byte, codes byte, sinks/window, block, flags)
    let configs: [(u8, u8, u8, u8, u8, &str); 5] = [
        (
            0b0000_0111,
            0x60,
            0x11,
            0x84,
            0x05,
            "d64-rate4-k1n16-centered-balanced",
        ),
        (0b0000_0000, 0x10, 0x00, 0x00, 0x00, "d64-plain-2bit"),
        (0b0100_0011, 0x55, 0x09, 0x00, 0x02, "d96-fp16"),
        (
            0b0010_0101,
            0x37,
            0x01,
            0x82,
            0x1b,
            "d128-05bit-k2n4-override",
        ),
        (0b0000_0001, 0x9b, 0x1a, 0xc3, 0x07, "d64-k8n2-k3n8-scaled"),
    ];
    for (i, (shape, codes, sw, block, flags, name)) in configs.into_iter().enumerate() {
        let mut f = vec![shape, codes, sw, block, flags];
        if block & 0x40 != 0 {
            f.push(0x10); // score scale 1.0
        }
        let s = i as u8 * 11;
        op(&mut f, 1, 0, 3, 0xe0, s);
        op(&mut f, 0, 1, 2, 0xc0, s + 1);
        op(&mut f, 1, 0, 1, 0xa0, s + 2);
        op(&mut f, 2, 0, 2, 0xe0, s + 3);
        op(&mut f, 3, 0, 0, 0x00, 0);
        op(&mut f, 1, 0, 4, 0xe0, s + 4);
        op(&mut f, 1, 0, 2, 0xe4, s + 5); // wrong key length
        op(&mut f, 1, 0, 1, 0xe1, s + 6); // specials
        op(&mut f, 0, 0, 5, 0x40, s + 7);
        op(&mut f, 2, 1, 1, 0x20, s + 8);
        op(&mut f, 4, 0, 0, 0x00, 0);
        op(&mut f, 1, 0, 2, 0x80, s + 9);
        write(dir, t, name, &f);
    }
}
