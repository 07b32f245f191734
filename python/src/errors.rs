//! The Python exceptions: one class per kind of `fibquant::Error`, all under `FibQuantError`
//! (a `ValueError`), each carrying exactly the Rust error's `Display` message.

use fibquant::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    fibquant,
    FibQuantError,
    PyValueError,
    "Base of every error the fibquant module raises (a ValueError). Its message is the Rust \
     runtime's; `layer`, `head`, `position` and `row` attributes name the place where the \
     runtime names one (else None)."
);
create_exception!(
    fibquant,
    UnknownCodeError,
    FibQuantError,
    "No embedded codebook for this (dim, k, n)."
);
create_exception!(
    fibquant,
    InvalidConfigError,
    FibQuantError,
    "A configuration value is out of range or inconsistent (includes a rate without a preset \
     code and a block size that does not divide the head dim)."
);
create_exception!(
    fibquant,
    WrongLengthError,
    FibQuantError,
    "An input has the wrong length or shape."
);
create_exception!(
    fibquant,
    NonFiniteError,
    FibQuantError,
    "An input holds a NaN or infinite value."
);
create_exception!(
    fibquant,
    NormOverflowError,
    FibQuantError,
    "A vector's norm does not fit the norm format (fp16: at most 65504)."
);
create_exception!(
    fibquant,
    CorruptDataError,
    FibQuantError,
    "Corrupt slot, codebook file or code file bytes."
);
create_exception!(
    fibquant,
    EmptyCacheError,
    FibQuantError,
    "Attention over a cache layer that holds no position."
);
create_exception!(
    fibquant,
    ArithmeticOverflowError,
    FibQuantError,
    "Finite inputs whose magnitudes f32 arithmetic cannot combine even after rescaling."
);
create_exception!(
    fibquant,
    ArrayError,
    FibQuantError,
    "An argument is not a numpy array of the required dtype and number of dimensions, or is \
     being written by another call."
);

/// The place a runtime error names (`Error::Cache`, `Error::Row`), and its innermost cause.
fn place(
    e: &Error,
) -> (
    Option<usize>,
    Option<usize>,
    Option<usize>,
    Option<usize>,
    &Error,
) {
    let (mut layer, mut head, mut position, mut row) = (None, None, None, None);
    let mut inner = e;
    loop {
        match inner {
            Error::Cache {
                layer: l,
                head: h,
                position: p,
                source,
            } => {
                layer = layer.or(Some(*l));
                head = head.or(*h);
                position = position.or(*p);
                inner = source;
            }
            Error::Row { row: r, source } => {
                row = row.or(Some(*r));
                inner = source;
            }
            _ => return (layer, head, position, row, inner),
        }
    }
}

/// The Python exception for a runtime error: the class of its innermost cause, the message of
/// the whole error, the place as attributes.
pub(crate) fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    let (layer, head, position, row, inner) = place(&e);
    let err = match inner {
        Error::UnknownRate { .. } => UnknownCodeError::new_err(message),
        Error::BlockDoesNotDivide { .. } | Error::InvalidConfig(_) => {
            InvalidConfigError::new_err(message)
        }
        Error::WrongLength { .. } => WrongLengthError::new_err(message),
        Error::NonFinite { .. } => NonFiniteError::new_err(message),
        Error::NormOverflow { .. } => NormOverflowError::new_err(message),
        Error::CorruptCodebook(_) | Error::CorruptSlot(_) | Error::CorruptCodeFile(_) => {
            CorruptDataError::new_err(message)
        }
        Error::EmptyCache => EmptyCacheError::new_err(message),
        Error::Overflow { .. } => ArithmeticOverflowError::new_err(message),
        _ => FibQuantError::new_err(message),
    };
    Python::attach(|py| {
        let value = err.value(py);
        for (name, v) in [
            ("layer", layer),
            ("head", head),
            ("position", position),
            ("row", row),
        ] {
            // Setting an attribute on a fresh exception instance cannot fail in practice; if it
            // did, the exception still carries its message.
            let _ = value.setattr(name, v);
        }
    });
    err
}

/// Shorthand: a runtime `Result` as a `PyResult`.
pub(crate) trait IntoPy<T> {
    /// Maps the error with [`to_py`].
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for fibquant::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Registers the exception classes on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FibQuantError", py.get_type::<FibQuantError>())?;
    m.add("UnknownCodeError", py.get_type::<UnknownCodeError>())?;
    m.add("InvalidConfigError", py.get_type::<InvalidConfigError>())?;
    m.add("WrongLengthError", py.get_type::<WrongLengthError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add("NormOverflowError", py.get_type::<NormOverflowError>())?;
    m.add("CorruptDataError", py.get_type::<CorruptDataError>())?;
    m.add("EmptyCacheError", py.get_type::<EmptyCacheError>())?;
    m.add(
        "ArithmeticOverflowError",
        py.get_type::<ArithmeticOverflowError>(),
    )?;
    m.add("ArrayError", py.get_type::<ArrayError>())?;
    Ok(())
}
