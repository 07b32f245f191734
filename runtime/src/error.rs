//! The one error type of the runtime.

use std::fmt;

/// Everything that can go wrong in the runtime. Every public fallible function returns this;
/// nothing in the crate panics on bad input.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No embedded codebook exists for this `(dim, k, n)`.
    UnknownRate {
        /// Head dimension asked for.
        dim: usize,
        /// Block size asked for.
        k: usize,
        /// Codebook size asked for.
        n: usize,
    },
    /// The block size does not divide the head dimension (the codec never pads silently).
    BlockDoesNotDivide {
        /// Head dimension.
        dim: usize,
        /// Block size.
        k: usize,
    },
    /// A configuration value is out of range (the message says which and why).
    InvalidConfig(String),
    /// A codebook file could not be parsed (truncated, bad magic, wrong version, corrupt data).
    CorruptCodebook(String),
    /// An input slice has the wrong length.
    WrongLength {
        /// What the slice was.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// An input vector holds a NaN or infinite component.
    NonFinite {
        /// Index of the offending component.
        index: usize,
    },
    /// A vector's norm does not fit the configured norm format (fp16 overflows above 65504).
    NormOverflow {
        /// The norm that did not fit.
        norm: f32,
        /// The largest norm the format can store.
        max: f32,
    },
    /// A stored slot holds a codeword index that is out of range, or a non-finite/negative norm.
    CorruptSlot(String),
    /// A [`crate::KvCache`] call failed; the place is named where one is to blame, `source` says
    /// why. Nothing was changed.
    Cache {
        /// Layer of the call.
        layer: usize,
        /// The kv head (keys, values) or query head (queries) at fault.
        head: Option<usize>,
        /// The sequence position at fault.
        position: Option<usize>,
        /// The underlying error.
        source: Box<Error>,
    },
    /// Attention over a cache layer that holds no position.
    EmptyCache,
    /// A code file that does not parse or fails its checksums.
    CorruptCodeFile(String),
    /// Finite inputs whose magnitudes f32 arithmetic cannot combine even after exact rescaling
    /// (terms beyond about 2^190 that cancel): the result would be NaN.
    Overflow {
        /// The computation.
        what: &'static str,
    },
    /// A row of a batch failed; `source` says why.
    Row {
        /// Index of the failing row.
        row: usize,
        /// The underlying error.
        source: Box<Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownRate { dim, k, n } => write!(
                f,
                "no embedded codebook for dim={dim}, k={k}, n={n} (not in the registry, or not embedded by \
                 this build's cargo features: `fibquant-gen list` lists the registry, the \
                 feature `all` embeds every code)"
            ),
            Error::BlockDoesNotDivide { dim, k } => {
                write!(f, "block size k={k} does not divide head dim {dim}")
            }
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Error::CorruptCodebook(m) => write!(f, "corrupt codebook file: {m}"),
            Error::WrongLength {
                what,
                expected,
                actual,
            } => write!(f, "{what} has length {actual}, expected {expected}"),
            Error::NonFinite { index } => {
                write!(f, "component {index} is NaN or infinite")
            }
            Error::NormOverflow { norm, max } => {
                write!(f, "norm {norm} does not fit the norm format (max {max})")
            }
            Error::CorruptSlot(m) => write!(f, "corrupt slot: {m}"),
            Error::Row { row, source } => write!(f, "row {row}: {source}"),
            Error::Cache {
                layer,
                head,
                position,
                source,
            } => {
                write!(f, "cache layer {layer}")?;
                if let Some(h) = head {
                    write!(f, ", head {h}")?;
                }
                if let Some(p) = position {
                    write!(f, ", position {p}")?;
                }
                write!(f, ": {source}")
            }
            Error::EmptyCache => write!(f, "the cache holds no position to attend to"),
            Error::CorruptCodeFile(m) => write!(f, "corrupt code file: {m}"),
            Error::Overflow { what } => write!(
                f,
                "{what} overflows f32 even after rescaling: the inputs' magnitudes are too large"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Row { source, .. } | Error::Cache { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Shorthand for `Result<T, fibquant::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that a slice has the expected length.
pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::WrongLength {
            what,
            expected,
            actual,
        })
    }
}
