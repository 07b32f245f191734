//! Python bindings of the FibQuant runtime: the native module `fibquant._native`, re-exported
//! by the Python package `fibquant` (see `python/README.md`).
//!
//! numpy arrays cross without copies where the layout allows (C-contiguous inputs are read in
//! place, outputs are allocated as numpy arrays and filled in place), heavy calls release the
//! GIL, and every runtime error becomes a `fibquant.FibQuantError` subclass carrying the
//! runtime's message.

mod arrays;
mod cache;
mod codec;
mod codefile;
mod errors;
mod registry;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<codec::PyCodec>()?;
    m.add_class::<cache::PyCachePolicy>()?;
    m.add_class::<cache::PyKvCache>()?;
    m.add_class::<codefile::PyCodeFile>()?;
    m.add_class::<registry::PyRegistryEntry>()?;
    m.add_function(wrap_pyfunction!(registry::registry_entries, m)?)?;
    m.add_function(wrap_pyfunction!(registry::best_for_rate, m)?)?;
    m.add("PRESET_RATES", fibquant::registry::PRESET_RATES.to_vec())?;
    m.add("DEFAULT_SEED", fibquant::DEFAULT_SEED)?;
    m.add("MAX_DIM", fibquant::MAX_DIM)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
