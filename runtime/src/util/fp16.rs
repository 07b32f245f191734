//! IEEE 754 binary16 conversion for the stored norms (round to nearest even), without a dependency.

/// Largest finite binary16 value.
pub const F16_MAX: f32 = 65504.0;

/// Converts an `f32` to binary16 bits, rounding to nearest even. Values above [`F16_MAX`] after
/// rounding become infinity; callers check the range first.
pub fn f32_to_f16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x007f_ffff;
    if exp == 0xff {
        // Inf or NaN.
        let nan = if mant != 0 { 0x0200 } else { 0 };
        return sign | 0x7c00 | nan;
    }
    let half_exp = exp - 127 + 15;
    if half_exp >= 0x1f {
        return sign | 0x7c00;
    }
    if half_exp <= 0 {
        // Subnormal half (or zero).
        if half_exp < -10 {
            return sign;
        }
        let m = mant | 0x0080_0000;
        let shift = (14 - half_exp) as u32;
        let half_m = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let round_up = rem > halfway || (rem == halfway && (half_m & 1) == 1);
        return sign | (half_m as u16 + round_up as u16);
    }
    let half_m = (mant >> 13) as u16;
    let rem = mant & 0x1fff;
    let mut out = sign | ((half_exp as u16) << 10) | half_m;
    if rem > 0x1000 || (rem == 0x1000 && (half_m & 1) == 1) {
        // Carry may roll into the exponent, which is the correct result (up to infinity).
        out += 1;
    }
    out
}

/// Converts binary16 bits to `f32` exactly.
pub fn f16_bits_to_f32(half: u16) -> f32 {
    let sign = ((half & 0x8000) as u32) << 16;
    let exp = ((half >> 10) & 0x1f) as u32;
    let mant = (half & 0x03ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: value = mant * 2^-24.
            let v = mant as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_half_round_trips_through_f32() {
        for h in 0..=u16::MAX {
            let f = f16_bits_to_f32(h);
            if f.is_nan() {
                assert!(f16_bits_to_f32(f32_to_f16_bits(f)).is_nan());
            } else {
                assert_eq!(f32_to_f16_bits(f), h, "half {h:#06x} -> {f}");
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_and_saturates_to_infinity() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f16_bits_to_f32(f32_to_f16_bits(1.0 + 2f32.powi(-11))), 1.0);
        // Slightly above halfway rounds up.
        let up = f16_bits_to_f32(f32_to_f16_bits(1.0 + 2f32.powi(-11) + 2f32.powi(-20)));
        assert_eq!(up, 1.0 + 2f32.powi(-10));
        assert_eq!(f16_bits_to_f32(f32_to_f16_bits(F16_MAX)), F16_MAX);
        assert!(f16_bits_to_f32(f32_to_f16_bits(70000.0)).is_infinite());
        // Relative error of a normal value is at most 2^-11.
        for i in 1..10_000 {
            let x = i as f32 * 0.37 + 1e-3;
            let y = f16_bits_to_f32(f32_to_f16_bits(x));
            assert!(((y - x) / x).abs() <= 2f32.powi(-11) + 1e-7, "{x} -> {y}");
        }
    }
}
