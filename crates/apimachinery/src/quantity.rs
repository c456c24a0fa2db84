//! Resource quantities (`500m`, `2Gi`, `1e3`) as exact values, with upstream's parsing and
//! canonical printing (`resource.Quantity`): `1000` prints as `1k`, `1536Mi` stays `1536Mi`,
//! `0.5Gi` prints as `512Mi`.
//!
//! Values are held as an integer count of nano-units, so sums and comparisons are exact;
//! precision below one nano-unit is rounded up, as upstream does.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity was written, which decides how it prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decimal suffixes (`m`, `k`, `M`, …) or none.
    DecimalSi,
    /// Binary suffixes (`Ki`, `Mi`, …).
    BinarySi,
    /// An exponent (`1e3`).
    DecimalExponent,
}

/// An exact resource quantity.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of the form `<number><suffix>`.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// Too large to hold exactly.
    #[error("quantity is too large")]
    TooLarge,
}

const NANO: i128 = 1_000_000_000;
/// Quantities beyond 2^100 nano-units are refused (upstream's practical range is far below).
const LIMIT: i128 = 1 << 100;

impl Quantity {
    /// Zero, printed as `0`.
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: Format::DecimalSi,
    };

    /// A whole number of units (`count` objects, for example).
    pub fn from_count(count: i64) -> Self {
        Self {
            nanos: i128::from(count) * NANO,
            format: Format::DecimalSi,
        }
    }

    /// The value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in milli-units, rounded up.
    pub fn millis(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// True below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// The sum; it prints in the format of the first non-zero operand.
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;

    /// The difference, in the first operand's format.
    fn sub(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: self.format,
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parses a quantity the way upstream's `resource.ParseQuantity` does.
pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa: i128 = 0;
    let mut fraction_digits: u32 = 0;
    let mut digits = 0;
    let mut seen_point = false;
    while i < bytes.len() {
        match bytes[i] {
            c @ b'0'..=b'9' => {
                digits += 1;
                // Digits beyond what can matter still have to be well-formed; ignore their
                // value once the mantissa is large, tracking only the scale.
                if mantissa < LIMIT {
                    mantissa = mantissa * 10 + i128::from(c - b'0');
                    if seen_point {
                        fraction_digits += 1;
                    }
                } else if !seen_point {
                    return Err(QuantityError::TooLarge);
                } else if c != b'0' {
                    // A non-zero digit far below the value: round up by one at this scale.
                    mantissa += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        i += 1;
    }
    if digits == 0 {
        return Err(QuantityError::Format);
    }
    let suffix = &s[i..];
    // Value = mantissa / 10^fraction_digits * multiplier, in nano-units.
    let (numerator, denominator, format) = match suffix {
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = match suffix {
                "Ki" => 1,
                "Mi" => 2,
                "Gi" => 3,
                "Ti" => 4,
                "Pi" => 5,
                _ => 6,
            };
            let factor = 1024i128.pow(power) * NANO;
            (
                mantissa
                    .checked_mul(factor)
                    .ok_or(QuantityError::TooLarge)?,
                10i128.pow(fraction_digits),
                Format::BinarySi,
            )
        }
        _ => {
            let (exponent, format) = match suffix {
                "n" => (-9, Format::DecimalSi),
                "u" => (-6, Format::DecimalSi),
                "m" => (-3, Format::DecimalSi),
                "" => (0, Format::DecimalSi),
                "k" => (3, Format::DecimalSi),
                "M" => (6, Format::DecimalSi),
                "G" => (9, Format::DecimalSi),
                "T" => (12, Format::DecimalSi),
                "P" => (15, Format::DecimalSi),
                "E" => (18, Format::DecimalSi),
                e if e.starts_with(['e', 'E']) => {
                    let exp: i32 = e[1..].parse().map_err(|_| QuantityError::Format)?;
                    if !e[1..]
                        .trim_start_matches(['+', '-'])
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                    {
                        return Err(QuantityError::Format);
                    }
                    (exp, Format::DecimalExponent)
                }
                _ => return Err(QuantityError::Format),
            };
            let scale = exponent + 9 - fraction_digits as i32;
            if scale >= 0 {
                let factor = 10i128
                    .checked_pow(scale as u32)
                    .ok_or(QuantityError::TooLarge)?;
                (
                    mantissa
                        .checked_mul(factor)
                        .ok_or(QuantityError::TooLarge)?,
                    1,
                    format,
                )
            } else if -scale > 38 {
                (i128::from(mantissa != 0), 1, format)
            } else {
                (mantissa, 10i128.pow((-scale) as u32), format)
            }
        }
    };
    let nanos = div_ceil(numerator, denominator);
    if nanos > LIMIT {
        return Err(QuantityError::TooLarge);
    }
    Ok(Quantity {
        nanos: if negative { -nanos } else { nanos },
        format,
    })
}

/// `a / b` rounded up, for `a >= 0`, `b > 0`.
fn div_ceil(a: i128, b: i128) -> i128 {
    if a >= 0 { (a + b - 1) / b } else { a / b }
}

impl fmt::Display for Quantity {
    /// Upstream's canonical form: the largest suffix that keeps the number whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        let nano = NANO as u128;
        let binary = self.format == Format::BinarySi
            && magnitude.is_multiple_of(nano)
            && magnitude / nano >= 1024;
        if binary {
            let mut value = magnitude / nano;
            let mut power = 0;
            while power < 6 && value.is_multiple_of(1024) {
                value /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return write!(f, "{sign}{value}{suffix}");
        }
        // Decimal: exponent in steps of 3, from nano (-9) up to exa (18).
        let mut value = magnitude;
        let mut exponent = -9;
        while exponent < 18 && value.is_multiple_of(1000) {
            value /= 1000;
            exponent += 3;
        }
        if self.format == Format::DecimalExponent {
            return if exponent == 0 {
                write!(f, "{sign}{value}")
            } else {
                write!(f, "{sign}{value}e{exponent}")
            };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{sign}{value}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, nanos: i128, printed: &str) {
        let q = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(q.nanos(), nanos, "{input}");
        assert_eq!(q.to_string(), printed, "{input}");
    }

    #[test]
    fn parses_and_prints_canonically() {
        check("0", 0, "0");
        check("1", NANO, "1");
        check("+1", NANO, "1");
        check("-1", -NANO, "-1");
        check("100m", 100_000_000, "100m");
        check("1000m", NANO, "1");
        check("1500m", 1_500_000_000, "1500m");
        check("0.5", 500_000_000, "500m");
        check(".5", 500_000_000, "500m");
        check("5.", 5 * NANO, "5");
        check("1000", 1000 * NANO, "1k");
        check("1500", 1500 * NANO, "1500");
        check("2k", 2000 * NANO, "2k");
        check("1M", 1_000_000 * NANO, "1M");
        check("3n", 3, "3n");
        check("7u", 7000, "7u");
        check("1Ki", 1024 * NANO, "1Ki");
        check("1Gi", 1024 * 1024 * 1024 * NANO, "1Gi");
        check("1024Mi", 1024 * 1024 * 1024 * NANO, "1Gi");
        check("1536Mi", 1536 * 1024 * 1024 * NANO, "1536Mi");
        check("0.5Gi", 512 * 1024 * 1024 * NANO, "512Mi");
        // Binary values below 1024 print as decimal, as upstream.
        check("0.5Ki", 512 * NANO, "512");
        check("1e3", 1000 * NANO, "1e3");
        check("1E3", 1000 * NANO, "1e3");
        check("1e0", NANO, "1");
        check("5e-3", 5_000_000, "5e-3");
        check("12E", 12 * 1_000_000_000_000_000_000 * NANO, "12E");
        // Below a nano-unit rounds up.
        check("0.1n", 1, "1n");
        check("1.0000000001", NANO + 1, "1000000001n");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "m", "-", ".", "1x", "1 ", " 1", "1..2", "1Kb", "1e", "1e1.5", "Gi", "1ki", "--1",
            "1e+",
        ] {
            assert_eq!(parse(bad).err(), Some(QuantityError::Format), "{bad:?}");
        }
        assert_eq!(parse("1e99").err(), Some(QuantityError::TooLarge));
    }

    #[test]
    fn arithmetic_is_exact() {
        let q = |s: &str| parse(s).unwrap_or(Quantity::ZERO);
        assert_eq!((q("100m") + q("200m")).to_string(), "300m");
        assert_eq!(q("0.1") + q("0.2"), q("300m"));
        assert_eq!((q("1Gi") + q("1Gi")).to_string(), "2Gi");
        assert_eq!((Quantity::ZERO + q("1Gi")).to_string(), "1Gi");
        assert_eq!((q("1") - q("1500m")).to_string(), "-500m");
        assert!(q("1") > q("999m"));
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1").max(q("2")), q("2"));
        assert_eq!(q("1m").millis(), 1);
        assert_eq!(q("1n").millis(), 1);
        assert_eq!(Quantity::from_count(3).to_string(), "3");
    }
}
