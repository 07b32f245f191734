//! Minimal `.npy` reading and writing for 2-D float arrays (C order, little-endian), as saved by
//! `numpy.save(path, array)` or from PyTorch via `tensor.numpy()`.
//!
//! Hand-written rather than `npyz`: npyz 0.8 writes the shape as `(rows, cols, )`, which would
//! change the bytes `fibquant-gen decode` writes, and reads headers through a full Python-literal
//! parser that this one fixed layout does not need.

use crate::error::{Error, Result};

/// A 2-D `f32` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Array2 {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// The element type a `.npy` file held before [`parse_any`] returned it as `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// Little-endian float32 (`<f4`), read as is.
    F32,
    /// Little-endian float64 (`<f8`), rounded to the nearest float32.
    F64,
}

/// Parses a `.npy` file holding a 2-D `<f4` or `<f8` array in C order (`<f8` is converted).
/// Malformed headers and shapes whose byte size overflows are errors, never panics.
pub fn parse(bytes: &[u8]) -> Result<Array2> {
    parse_any(bytes).map(|(a, _)| a)
}

/// A name and a conversion hint for a `.npy` dtype string that [`parse_any`] does not read.
fn describe_dtype(descr: &str) -> String {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => descr.split_at(1),
        _ => ("", descr),
    };
    let big = order == ">";
    let kind = match code.as_bytes().first() {
        Some(b'f') => match code {
            "f2" => "float16".to_string(),
            "f4" => "float32".to_string(),
            "f8" => "float64".to_string(),
            _ => format!("{}-byte float", &code[1..]),
        },
        Some(b'i') => format!("{}-byte signed integer", &code[1..]),
        Some(b'u') => format!("{}-byte unsigned integer", &code[1..]),
        Some(b'b') => "boolean".to_string(),
        Some(b'c') => "complex".to_string(),
        Some(b'O') => "Python object".to_string(),
        Some(b'U' | b'S') => "string".to_string(),
        _ => "unknown type".to_string(),
    };
    if big {
        format!("big-endian {kind}")
    } else {
        kind
    }
}

/// [`parse`], also saying which dtype the file held (so that callers can report a conversion).
pub fn parse_any(bytes: &[u8]) -> Result<(Array2, Dtype)> {
    let bad = |msg: String| Error::Npy(msg);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (bad magic)".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match (major, minor) {
        (1, 0) => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        (2 | 3, 0) => match bytes.get(8..12) {
            Some(b) => (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12),
            None => return Err(bad("truncated .npy header".into())),
        },
        _ => return Err(bad(format!("unsupported .npy version {major}.{minor}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("truncated .npy header".into()))?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text".into()))?;
    let field = |name: &str| -> Result<&str> {
        let key = format!("'{name}':");
        let i = header
            .find(&key)
            .ok_or_else(|| bad(format!("header lacks '{name}'")))?;
        Ok(header[i + key.len()..].trim_start())
    };
    // The dtype string: the text between the quotes after 'descr': (a structured dtype is a
    // list instead).
    let descr_field = field("descr")?;
    let descr = descr_field
        .strip_prefix('\'')
        .and_then(|s| s.split_once('\''))
        .or_else(|| {
            descr_field
                .strip_prefix('"')
                .and_then(|s| s.split_once('"'))
        })
        .map(|(inside, _)| inside);
    let dtype = match descr {
        Some("<f4") => Dtype::F32,
        Some("<f8") => Dtype::F64,
        Some(other) => {
            return Err(bad(format!(
                "dtype '{other}' ({}) is not supported: save float32 ('<f4') or float64 ('<f8'), for example with array.astype('<f4')",
                describe_dtype(other)
            )))
        }
        None => {
            let shown: String = descr_field.chars().take(40).collect();
            return Err(bad(format!(
                "dtype {shown} is not supported (structured or malformed): save a plain float32 array ('<f4')"
            )));
        }
    };
    let fortran = field("fortran_order")?;
    if fortran.starts_with("True") {
        return Err(bad(
            "Fortran-order arrays are not supported: save with np.ascontiguousarray".into(),
        ));
    }
    if !fortran.starts_with("False") {
        return Err(bad("fortran_order is neither True nor False".into()));
    }
    // `(rows, cols)`: the text between the opening and the first closing parenthesis.
    let shape = field("shape")?
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inside, _)| inside)
        .ok_or_else(|| bad("bad shape".into()))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("bad shape entry {s}")))
        })
        .collect::<Result<_>>()?;
    if dims.len() != 2 {
        return Err(bad(format!(
            "expected a 2-D array (rows, d), got shape {dims:?}"
        )));
    }
    let (rows, cols) = (dims[0], dims[1]);
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F64 => 8,
    };
    let overflow = || bad(format!("shape ({rows}, {cols}) overflows"));
    let count = rows.checked_mul(cols).ok_or_else(overflow)?;
    let need = count.checked_mul(width).ok_or_else(overflow)?;
    let body = &bytes[end..];
    if body.len() != need {
        return Err(bad(format!(
            "data holds {} bytes, shape ({rows}, {cols}) needs {need}",
            body.len()
        )));
    }
    let data = match dtype {
        Dtype::F32 => body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => {
            let mut data = Vec::with_capacity(count);
            for (i, c) in body.chunks_exact(8).enumerate() {
                let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                let x = v as f32;
                if v.is_finite() && !x.is_finite() {
                    // cols > 0 here: the body is not empty.
                    return Err(bad(format!(
                        "float64 value {v:e} at row {}, column {} is beyond the float32 range",
                        i / cols,
                        i % cols
                    )));
                }
                data.push(x);
            }
            data
        }
    };
    Ok((Array2 { rows, cols, data }, dtype))
}

/// Serializes a 2-D `f32` array as a version 1.0 `.npy` file.
pub fn to_bytes(a: &Array2) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        a.rows, a.cols
    );
    // Pad so that magic + len + header + newline is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * a.data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in &a.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let a = Array2 {
            rows: 3,
            cols: 2,
            data: vec![1.0, 2.0, 3.0, 4.5, -1.0, 0.25],
        };
        let bytes = to_bytes(&a);
        assert_eq!((bytes.len() - 4 * 6) % 64, 0, "header padded to 64 bytes");
        assert_eq!(parse(&bytes).unwrap(), a);
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse(b"garbage").is_err());
        let mut bad = bytes.clone();
        let at = bad.windows(3).position(|w| w == b"<f4").unwrap();
        bad[at..at + 3].copy_from_slice(b"<i8");
        assert!(parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        // float64 input is accepted and converted.
        let mut f8 = bytes[..bytes.len() - 24].to_vec();
        f8[at..at + 3].copy_from_slice(b"<f8");
        for v in &a.data {
            f8.extend_from_slice(&(*v as f64).to_le_bytes());
        }
        assert_eq!(parse(&f8).unwrap(), a);
    }

    /// A version 1.0 header holding `dict`, padded with spaces to `total` bytes of file.
    fn with_header(dict: &str, total: usize) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        let len = total - 10;
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.resize(total, b' ');
        out
    }

    #[test]
    fn malformed_shapes_are_errors_not_panics() {
        for shape in ["), }", "}", "(", "(3, 2", "\u{e9}(3, 2), }", "(3, x), }"] {
            let file = with_header(
                &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}"),
                128,
            );
            let err = parse(&file).unwrap_err().to_string();
            assert!(err.contains("shape"), "{shape}: {err}");
        }
    }

    #[test]
    fn shapes_whose_byte_size_overflows_are_refused_without_allocating() {
        // rows * cols fits in usize, rows * cols * 4 wraps to 0 (and the body is empty).
        let rows = (1usize << 62) / 128;
        let file = with_header(
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 128), }}"),
            128,
        );
        let err = parse(&file).unwrap_err().to_string();
        assert!(err.contains("overflows"), "{err}");
        let file = with_header(
            &format!(
                "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, 3), }}",
                usize::MAX / 2
            ),
            128,
        );
        let err = parse(&file).unwrap_err().to_string();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn every_truncation_and_byte_change_is_an_error_or_a_valid_array() {
        let a = Array2 {
            rows: 3,
            cols: 4,
            data: (0..12).map(|i| i as f32 * 0.5 - 2.0).collect(),
        };
        let f4 = to_bytes(&a);
        let at = f4.windows(3).position(|w| w == b"<f4").unwrap();
        let mut f8 = f4[..f4.len() - 48].to_vec();
        f8[at..at + 3].copy_from_slice(b"<f8");
        for v in &a.data {
            f8.extend_from_slice(&(*v as f64).to_le_bytes());
        }
        assert_eq!(parse_any(&f8).unwrap(), (a.clone(), Dtype::F64));
        for file in [f4, f8] {
            let header_end = file.len() - if file.len() > 128 + 48 { 96 } else { 48 };
            for len in 0..file.len() {
                assert!(parse(&file[..len]).is_err(), "truncated to {len}");
            }
            for pos in 0..file.len() {
                for v in 0..=255u8 {
                    if v == file[pos] {
                        continue;
                    }
                    let mut m = file.clone();
                    m[pos] = v;
                    let r = std::panic::catch_unwind(|| parse(&m));
                    let r = r.unwrap_or_else(|_| panic!("panic at byte {pos} = {v:#x}"));
                    // Magic and version bytes are always checked.
                    if pos < 8 {
                        assert!(r.is_err(), "byte {pos} = {v:#x} accepted");
                    }
                    if let Ok(b) = r {
                        assert_eq!(b.data.len(), b.rows * b.cols);
                        if pos < header_end {
                            // A header change that still parses (padding, a space) keeps the
                            // array, or gives an array that the body's size allows.
                            assert!(b.rows * b.cols <= 12, "byte {pos}: {b:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn other_dtypes_and_layouts_are_named_in_the_error() {
        let a = Array2 {
            rows: 2,
            cols: 2,
            data: vec![1.0, 2.0, 3.0, 4.0],
        };
        let bytes = to_bytes(&a);
        let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        for (descr, name) in [
            (&b"<i4"[..], "4-byte signed integer"),
            (b"<u4", "4-byte unsigned integer"),
            (b"<f2", "float16"),
            (b">f4", "big-endian float32"),
            (b">f8", "big-endian float64"),
            (b"|b1", "boolean"),
            (b"<c8", "complex"),
        ] {
            let mut m = bytes.clone();
            m[at..at + 3].copy_from_slice(descr);
            let err = parse(&m).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("not supported"), "{err}");
        }
        let f = bytes.windows(5).position(|w| w == b"False").unwrap();
        let mut fortran = bytes.clone();
        fortran[f..f + 5].copy_from_slice(b"True ");
        let err = parse(&fortran).unwrap_err().to_string();
        assert!(err.contains("Fortran"), "{err}");
        let mut maybe = bytes.clone();
        maybe[f..f + 5].copy_from_slice(b"Maybe");
        assert!(parse(&maybe).is_err());
        // A finite float64 beyond the float32 range names its position.
        let mut f8 = bytes[..bytes.len() - 16].to_vec();
        f8[at..at + 3].copy_from_slice(b"<f8");
        for v in [1.0f64, 2.0, 1e300, 4.0] {
            f8.extend_from_slice(&v.to_le_bytes());
        }
        let err = parse(&f8).unwrap_err().to_string();
        assert!(err.contains("row 1, column 0"), "{err}");
    }
}
