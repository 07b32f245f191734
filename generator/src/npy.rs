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

/// Parses a `.npy` file holding a 2-D `<f4` or `<f8` array in C order (`<f8` is converted).
/// Malformed headers and shapes whose byte size overflows are errors, never panics.
pub fn parse(bytes: &[u8]) -> Result<Array2> {
    let bad = |msg: String| Error::Npy(msg);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (bad magic)".into()));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated .npy header".into()));
            }
            (
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported .npy version {v}"))),
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
    let descr = field("descr")?;
    let width: usize = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(bad(format!(
            "dtype {} is not supported: save float32 ('<f4') or float64 ('<f8')",
            descr.split(',').next().unwrap_or("?")
        )));
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(bad(
            "Fortran-order arrays are not supported: save with np.ascontiguousarray".into(),
        ));
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
    let data = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect()
    };
    Ok(Array2 { rows, cols, data })
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
}
