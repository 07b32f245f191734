//! Minimal `.npy` reading and writing for 2-D float arrays (C order, little-endian), as saved by
//! `numpy.save(path, array)` or from PyTorch via `tensor.numpy()`.

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
pub fn parse(bytes: &[u8]) -> Result<Array2, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let field = |name: &str| -> Result<&str, String> {
        let key = format!("'{name}':");
        let i = header.find(&key).ok_or(format!("header lacks '{name}'"))?;
        Ok(header[i + key.len()..].trim_start())
    };
    let descr = field("descr")?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(format!(
            "dtype {} is not supported: save float32 ('<f4') or float64 ('<f8')",
            descr.split(',').next().unwrap_or("?")
        ));
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(
            "Fortran-order arrays are not supported: save with np.ascontiguousarray".into(),
        );
    }
    let shape = field("shape")?;
    let shape = &shape[1..shape.find(')').ok_or("bad shape")?];
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry {s}"))
        })
        .collect::<Result<_, _>>()?;
    if dims.len() != 2 {
        return Err(format!(
            "expected a 2-D array (rows, d), got shape {dims:?}"
        ));
    }
    let (rows, cols) = (dims[0], dims[1]);
    let count = rows.checked_mul(cols).ok_or("shape overflows")?;
    let body = &bytes[end..];
    if body.len() != count * width {
        return Err(format!(
            "data holds {} bytes, shape ({rows}, {cols}) needs {}",
            body.len(),
            count * width
        ));
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
        assert!(parse(&bad).unwrap_err().contains("not supported"));
        // float64 input is accepted and converted.
        let mut f8 = bytes[..bytes.len() - 24].to_vec();
        f8[at..at + 3].copy_from_slice(b"<f8");
        for v in &a.data {
            f8.extend_from_slice(&(*v as f64).to_le_bytes());
        }
        assert_eq!(parse(&f8).unwrap(), a);
    }
}
