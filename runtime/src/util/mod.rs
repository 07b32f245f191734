//! Helpers every layer uses: a seeded random generator ([`rng`]), CRC-32C ([`crc`]), IEEE binary16 conversion
//! ([`fp16`]) and bit packing of codeword indices ([`pack`]).

pub mod crc;
pub mod fp16;
pub mod pack;
pub mod rng;
