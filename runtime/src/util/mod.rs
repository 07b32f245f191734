//! Helpers every layer uses: a seeded random generator ([`rng`]), CRC-32C ([`crc`]), IEEE binary16 conversion
//! ([`fp16`]), exact rescaling on f32 overflow ([`overflow`]) and bit packing of codeword
//! indices ([`pack`]).

pub mod crc;
pub mod fp16;
pub mod overflow;
pub mod pack;
pub mod rng;
