//! Helpers every layer uses: a seeded random generator ([`rng`]), IEEE binary16 conversion
//! ([`fp16`]) and bit packing of codeword indices ([`pack`]).

pub mod fp16;
pub mod pack;
pub mod rng;
