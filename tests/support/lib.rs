//! Nothing to export: the root package exists for the integration tests beside this file, and
//! for the workspace README's Rust examples, compiled and run as doctests here.

/// The workspace README's Rust examples.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
