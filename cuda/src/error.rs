//! The crate's error type.

use std::fmt;

/// What can go wrong on the GPU path.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No usable CUDA driver or NVRTC library on this machine (the crate loads both at run
    /// time), or no device.
    NoGpu(String),
    /// A CUDA driver call failed.
    Driver(String),
    /// NVRTC could not compile a kernel (the log says why).
    Compile(String),
    /// A shape or code the GPU kernels do not serve (the message says which limit).
    Unsupported(String),
    /// Inputs of the wrong length or shape, or caches that do not fit together.
    InvalidInput(String),
    /// A row the encoder refused: non-finite values, or a norm the norm format cannot hold.
    BadRow {
        /// The row's index in the batch.
        row: usize,
        /// Why.
        reason: &'static str,
    },
    /// An error of the CPU runtime (reading a cache, building a codec).
    Runtime(fibquant::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoGpu(m) => write!(f, "no usable GPU: {m}"),
            Error::Driver(m) => write!(f, "CUDA driver error: {m}"),
            Error::Compile(m) => write!(f, "NVRTC could not compile a kernel: {m}"),
            Error::Unsupported(m) => write!(f, "not supported on the GPU: {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::BadRow { row, reason } => write!(f, "row {row}: {reason}"),
            Error::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Runtime(e) => Some(e),
            _ => None,
        }
    }
}

impl From<fibquant::Error> for Error {
    fn from(e: fibquant::Error) -> Self {
        Error::Runtime(e)
    }
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Driver(format!("{e:?}"))
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
