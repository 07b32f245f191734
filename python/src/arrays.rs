//! numpy arrays in and out: C-contiguous inputs are read in place, others copied once; outputs
//! are allocated as numpy arrays and filled in place.

use crate::errors::{ArrayError, IntoPy, WrongLengthError};
use numpy::{Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray};
use numpy::{PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// An input array's data: borrowed from numpy when C-contiguous, else a copy in C order.
pub(crate) struct Input<'py, T: Element> {
    view: Option<PyReadonlyArrayDyn<'py, T>>,
    owned: Vec<T>,
    /// The array's shape.
    pub shape: Vec<usize>,
}

impl<'py, T: Element + Copy> Input<'py, T> {
    /// The elements in C order.
    pub fn data(&self) -> &[T] {
        match &self.view {
            // `read` checked contiguity and alignment, so `as_slice` succeeds; an empty slice
            // otherwise would only make the runtime report a wrong length.
            Some(v) => v.as_slice().unwrap_or(&[]),
            None => &self.owned,
        }
    }
}

/// The dtype name of an array-like object, for messages.
fn dtype_name(obj: &Bound<'_, PyAny>) -> String {
    obj.getattr("dtype")
        .and_then(|d| d.str())
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Reads `obj` as a numpy array of `T` (`dtype` names it) with `ndim` dimensions.
pub(crate) fn read<'py, T: Element + Copy>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    dtype: &str,
    ndim: usize,
) -> PyResult<Input<'py, T>> {
    let untyped = obj.cast::<PyUntypedArray>().map_err(|_| {
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        ArrayError::new_err(format!(
            "{what} must be a numpy array of {dtype}, got {type_name}"
        ))
    })?;
    let shape = untyped.shape().to_vec();
    if shape.len() != ndim {
        return Err(ArrayError::new_err(format!(
            "{what} must be a {ndim}-D array, got shape {}",
            shape_str(&shape)
        )));
    }
    let typed = obj.cast::<PyArrayDyn<T>>().map_err(|_| {
        ArrayError::new_err(format!(
            "{what} must have dtype {dtype} (native byte order), got {}",
            dtype_name(obj)
        ))
    })?;
    let ro = typed
        .try_readonly()
        .map_err(|e| ArrayError::new_err(format!("{what} cannot be read: {e}")))?;
    let in_place = ro.is_c_contiguous() && ro.as_slice().is_ok();
    if in_place {
        Ok(Input {
            view: Some(ro),
            owned: Vec::new(),
            shape,
        })
    } else {
        let owned = ro.as_array().iter().copied().collect();
        Ok(Input {
            view: None,
            owned,
            shape,
        })
    }
}

/// Reads a float32 array of `ndim` dimensions.
pub(crate) fn read_f32<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
) -> PyResult<Input<'py, f32>> {
    read(obj, what, "float32", ndim)
}

/// Reads a uint8 array of `ndim` dimensions.
pub(crate) fn read_u8<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
) -> PyResult<Input<'py, u8>> {
    read(obj, what, "uint8", ndim)
}

/// A fresh zeroed C-order array of `shape`.
pub(crate) fn zeros<'py, T: Element>(
    py: Python<'py>,
    shape: &[usize],
) -> Bound<'py, PyArrayDyn<T>> {
    PyArrayDyn::<T>::zeros(py, shape, false)
}

/// A fresh zeroed C-order array of `shape`, written by `fill` with the GIL released: how a
/// call returns its output. `fill`'s runtime error becomes the matching Python exception.
pub(crate) fn filled<'py, T, F>(
    py: Python<'py>,
    shape: &[usize],
    fill: F,
) -> PyResult<Bound<'py, PyArrayDyn<T>>>
where
    T: Element + Send,
    F: FnOnce(&mut [T]) -> fibquant::Result<()> + Send,
{
    let out = zeros::<T>(py, shape);
    {
        let mut rw = write(&out)?;
        let slice = out_slice(&mut rw)?;
        py.detach(|| fill(slice)).py()?;
    }
    Ok(out)
}

/// The data of an array this module allocated, to write in place.
pub(crate) fn out_slice<'a, T: Element>(
    rw: &'a mut PyReadwriteArrayDyn<'_, T>,
) -> PyResult<&'a mut [T]> {
    rw.as_slice_mut()
        .map_err(|e| ArrayError::new_err(format!("output cannot be written: {e}")))
}

/// Write access to an array this module just allocated (nothing else can hold it).
pub(crate) fn write<'py, T: Element>(
    array: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    array
        .try_readwrite()
        .map_err(|e| ArrayError::new_err(format!("output cannot be written: {e}")))
}

/// A shape as Python writes it: `(4, 32)`, `(64,)`.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Fails unless `shape[axis] == expected`, naming `what` and the shape expected.
pub(crate) fn expect_dim(
    what: &str,
    shape: &[usize],
    axis: usize,
    expected: usize,
    pattern: &str,
) -> PyResult<()> {
    if shape.get(axis) == Some(&expected) {
        Ok(())
    } else {
        Err(WrongLengthError::new_err(format!(
            "{what} has shape {}, expected {pattern}",
            shape_str(shape)
        )))
    }
}
