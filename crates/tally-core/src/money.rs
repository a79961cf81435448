//! Exact decimal amounts. No floating point anywhere: every amount is a `rust_decimal::Decimal`
//! behind the [`Amount`] newtype, every operation is checked, and overflow is an error value.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::InvalidInput;

/// Largest number of digits after the point an asset may have.
pub const SCALE_MAX: u32 = 18;

/// An exact decimal amount (money, quantity or price). May be negative where the context
/// allows it (a balance); constructors used at the edge reject negatives where they are invalid.
#[derive(Clone, Copy, Default)]
pub struct Amount(Decimal);

/// Powers of ten to align the scales of two amounts by.
const POWERS_OF_TEN: [u64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// 10^0 ..= 10^38: every power of ten below 2^128.
const POWERS_OF_TEN_U128: [u128; 39] = {
    let mut powers = [1u128; 39];
    let mut k = 1;
    while k < 39 {
        powers[k] = powers[k - 1] * 10;
        k += 1;
    }
    powers
};

/// The settlement path adds and subtracts a few dozen amounts per event, and `rust_decimal`'s
/// general addition spends most of its time choosing a path. This does the common cases the
/// way `rust_decimal` does them, giving the same `Decimal` bit for bit (value, scale and sign;
/// a test compares them): a zero operand gives the other operand as it is (negated when it is
/// subtracted), and two mantissas whose scales are at most 9 apart and that fit 64 bits once
/// aligned give their exact sum at the larger scale if that fits 64 bits too (a zero sum is +0
/// at that scale). Anything else returns `None`, for the general path.
#[inline(always)]
fn exact_sum(a: Decimal, b: Decimal, subtract: bool) -> Option<Decimal> {
    let (x, y) = (a.unpack(), b.unpack());
    let b_is_zero = y.hi | y.mid | y.lo == 0;
    if x.hi | x.mid | x.lo == 0 {
        return Some(if subtract && !b_is_zero { -b } else { b });
    }
    if b_is_zero {
        return Some(a);
    }
    if x.hi != 0 || y.hi != 0 {
        return None;
    }
    let left = (x.mid as u64) << 32 | x.lo as u64;
    let right = (y.mid as u64) << 32 | y.lo as u64;
    let (left, right, scale) = match x.scale.cmp(&y.scale) {
        Ordering::Equal => (left, right, x.scale),
        Ordering::Greater => {
            let power = *POWERS_OF_TEN.get((x.scale - y.scale) as usize)?;
            (left, right.checked_mul(power)?, x.scale)
        }
        Ordering::Less => {
            let power = *POWERS_OF_TEN.get((y.scale - x.scale) as usize)?;
            (left.checked_mul(power)?, right, y.scale)
        }
    };
    let right_negative = y.negative != subtract;
    let (magnitude, negative) = if x.negative == right_negative {
        (left.checked_add(right)?, x.negative)
    } else if left >= right {
        (left - right, x.negative)
    } else {
        (right - left, right_negative)
    };
    Some(Decimal::from_parts(
        magnitude as u32,
        (magnitude >> 32) as u32,
        0,
        negative,
        scale,
    ))
}

/// An optional sign, ASCII digits, at most one point, and at least one digit.
fn well_formed(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    !(whole.is_empty() && fraction.is_empty())
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.bytes().all(|byte| byte.is_ascii_digit())
}

/// Plain decimal text, `-?[0-9]+(.[0-9]+)?` with at most 19 digits (so the mantissa fits 64
/// bits), read with integer arithmetic: the same `Amount` as `Decimal::from_str` then
/// `normalize` (a test compares). Anything else (`None`) goes to `rust_decimal`'s parser, which
/// also gives the errors. Every quantity of every usage event comes through here.
fn parse_plain(text: &str) -> Option<Amount> {
    let (negative, digits) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let mut mantissa: u64 = 0;
    let mut count = 0;
    let mut point = None;
    for (index, &byte) in digits.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                count += 1;
                if count > 19 {
                    return None;
                }
                mantissa = mantissa * 10 + u64::from(byte - b'0');
            }
            b'.' if point.is_none() && index > 0 && index + 1 < digits.len() => {
                point = Some(index);
            }
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let scale = point.map_or(0, |index| (digits.len() - index - 1) as u32);
    Some(Amount::from_decimal(Decimal::from_parts(
        mantissa as u32,
        (mantissa >> 32) as u32,
        0,
        negative,
        scale,
    )))
}

/// Division by a power of ten (10 to 10^9 at scale 0: the `per` of a price such as "2 per
/// 1000 tokens", divided by for every event) of a mantissa below 2^64 at a scale up to 19,
/// with the very `Decimal` `rust_decimal` gives (a test compares). `None` for anything else.
fn divide_by_power_of_ten(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (x, y) = (a.unpack(), b.unpack());
    if y.scale != 0 || y.hi != 0 || y.mid != 0 || x.hi != 0 || x.scale > 19 {
        return None;
    }
    let power = POWERS_OF_TEN[1..]
        .iter()
        .position(|&p| p == u64::from(y.lo))?
        + 1;
    let mantissa = (x.mid as u64) << 32 | x.lo as u64;
    if mantissa == 0 {
        return None;
    }
    let negative = x.negative != y.negative;
    let divisor = POWERS_OF_TEN[power];
    if mantissa.is_multiple_of(divisor) {
        // No remainder: the quotient at the dividend's scale, as it is.
        let quotient = mantissa / divisor;
        return Some(Decimal::from_parts(
            quotient as u32,
            (quotient >> 32) as u32,
            0,
            negative,
            x.scale,
        ));
    }
    // A remainder: `rust_decimal` scales the quotient up by 10^9 at once (the scale is at most
    // 19 and the quotient below 2^64, so it may), which leaves none since the divisor divides
    // 10^9: the mantissa times 10^(9 - power) at scale + 9. Then it strips trailing zeros as
    // its `unscale` does: 8 at a time while the low 32 bits are zero, then 4, 2 and 1 once.
    let mut quotient = mantissa as u128 * POWERS_OF_TEN[9 - power] as u128;
    let mut scale = x.scale + 9;
    while quotient as u32 == 0 && scale >= 8 && quotient.is_multiple_of(100_000_000) {
        quotient /= 100_000_000;
        scale -= 8;
    }
    for (low_bits, digits, power) in [(0xf, 4, 10_000), (0x3, 2, 100), (0x1, 1, 10)] {
        if quotient & low_bits == 0 && scale >= digits && quotient.is_multiple_of(power) {
            quotient /= power;
            scale -= digits;
        }
    }
    Some(Decimal::from_parts(
        quotient as u32,
        (quotient >> 32) as u32,
        (quotient >> 64) as u32,
        negative,
        scale,
    ))
}

/// `rust_decimal`'s addition, out of line so the shortcut above stays small where inlined.
#[cold]
#[inline(never)]
fn general_sum(a: Decimal, b: Decimal, subtract: bool) -> Option<Amount> {
    if subtract {
        a.checked_sub(b).map(Amount)
    } else {
        a.checked_add(b).map(Amount)
    }
}

/// Comparison takes a shortcut when both sides have the same scale (the usual case): the
/// mantissas as `i128`, which orders them exactly as their values; other cases go to
/// `rust_decimal`. (Its addition already has such shortcuts of its own.)
impl PartialEq for Amount {
    fn eq(&self, other: &Amount) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Amount) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Amount) -> std::cmp::Ordering {
        if self.0.scale() == other.0.scale() {
            self.0.mantissa().cmp(&other.0.mantissa())
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl std::hash::Hash for Amount {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl Amount {
    pub const ZERO: Amount = Amount(Decimal::ZERO);
    pub const ONE: Amount = Amount(Decimal::ONE);

    pub fn from_decimal(value: Decimal) -> Self {
        Amount(value.normalize())
    }

    /// Wraps a decimal as it is, without normalizing (for values already canonical or whose
    /// scale does not matter, on hot paths).
    pub(crate) fn from_decimal_raw(value: Decimal) -> Self {
        Amount(value)
    }

    pub fn decimal(self) -> Decimal {
        self.0
    }

    /// An integer amount (tests, counters).
    pub fn from_i64(value: i64) -> Self {
        Amount(Decimal::from(value))
    }

    /// Parses a decimal string such as `"12.50"`; rejects anything else with the field named.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        // ASCII spaces around the number are no part of it; anything else that is not an
        // ASCII digit, one point or a leading sign is refused (`Decimal::from_str` alone would
        // take "1_0" as 10, a typo for "1.0" charged tenfold).
        let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
        if trimmed.is_empty() {
            return Err(InvalidInput::new(
                field,
                "must be a decimal number, got an empty string",
            ));
        }
        if let Some(value) = parse_plain(trimmed) {
            return Ok(value);
        }
        if trimmed.contains(['e', 'E']) {
            return Err(InvalidInput::new(
                field,
                format!("must be a plain decimal number without exponent, got {text:?}"),
            ));
        }
        if !well_formed(trimmed) {
            return Err(InvalidInput::new(
                field,
                format!(
                    "must be a decimal number (ASCII digits, at most one point, an optional leading sign), got {text:?}"
                ),
            ));
        }
        let decimal = Decimal::from_str(trimmed).map_err(|_| {
            InvalidInput::new(
                field,
                format!(
                    "has more digits than an amount holds (28 significant digits), got {text:?}"
                ),
            )
        })?;
        // `Decimal` rounds what does not fit its 28 digits instead of failing: an amount is
        // taken only as written, never rounded.
        let written = trimmed
            .split_once('.')
            .map_or(0, |(_, fraction)| fraction.len() as u32);
        if decimal.scale() < written {
            return Err(InvalidInput::new(
                field,
                format!("has more digits than an amount holds exactly (28 significant digits), got {text:?}"),
            ));
        }
        Ok(Amount::from_decimal(decimal))
    }

    /// Parses and requires `>= 0`.
    pub fn parse_non_negative(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let value = Self::parse(field, text)?;
        if value.is_negative() {
            return Err(InvalidInput::new(
                field,
                format!("must be >= 0, got {value}"),
            ));
        }
        Ok(value)
    }

    /// Parses and requires `> 0`.
    pub fn parse_positive(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let value = Self::parse(field, text)?;
        if !value.is_positive() {
            return Err(InvalidInput::new(
                field,
                format!("must be > 0, got {value}"),
            ));
        }
        Ok(value)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    pub fn is_positive(self) -> bool {
        self.0.is_sign_positive() && !self.0.is_zero()
    }

    /// Digits after the point, ignoring trailing zeros.
    pub fn scale(self) -> u32 {
        // Most values carry no trailing zeros; stripping them only matters when they might.
        match self.0.scale() {
            0 => 0,
            _ => self.canonical_parts().0,
        }
    }

    /// True when `self` has at most `max` digits after the point (ignoring trailing zeros).
    pub fn fits_scale(self, max: u32) -> bool {
        self.0.scale() <= max || self.scale() <= max
    }

    /// `self + other`; `None` when the result leaves `Decimal`'s range.
    #[inline(always)]
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        match exact_sum(self.0, other.0, false) {
            Some(sum) => Some(Amount(sum)),
            None => general_sum(self.0, other.0, false),
        }
    }

    /// `self - other`; `None` when the result leaves `Decimal`'s range.
    #[inline(always)]
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        match exact_sum(self.0, other.0, true) {
            Some(difference) => Some(Amount(difference)),
            None => general_sum(self.0, other.0, true),
        }
    }

    pub fn checked_mul(self, other: Amount) -> Option<Amount> {
        self.0.checked_mul(other.0).map(Amount)
    }

    pub fn checked_div(self, other: Amount) -> Option<Amount> {
        if let Some(quotient) = divide_by_power_of_ten(self.0, other.0) {
            return Some(Amount(quotient));
        }
        self.0.checked_div(other.0).map(Amount)
    }

    /// `self * by / over`, exact, rounded half-to-even at `scale` digits, in 128-bit integers:
    /// a grant's revenue (`units * paid / amount`), computed twice per draw. The same value as
    /// `checked_mul`, `checked_div`, then `round_half_even` (a test compares). `None` where
    /// that could differ or this does not apply, and the caller takes that way: a negative or
    /// 96-bit operand, a product `rust_decimal` would not hold exactly, a result of 10^18 or
    /// more at `scale`, or an exact quotient within a millionth of a unit at `scale` of a
    /// rounding midpoint without being on it (`rust_decimal` rounds a quotient that does not
    /// end to about 28 digits first, which could move it across the midpoint).
    pub(crate) fn mul_div_round_half_even(
        self,
        by: Amount,
        over: Amount,
        scale: u32,
    ) -> Option<Amount> {
        let (x, y, z) = (self.0.unpack(), by.0.unpack(), over.0.unpack());
        if x.negative || y.negative || z.negative || x.hi != 0 || y.hi != 0 || z.hi != 0 {
            return None;
        }
        let (units, by_mantissa, over_mantissa) = (
            (x.mid as u64) << 32 | x.lo as u64,
            (y.mid as u64) << 32 | y.lo as u64,
            (z.mid as u64) << 32 | z.lo as u64,
        );
        if over_mantissa == 0 {
            return None;
        }
        let product = units as u128 * by_mantissa as u128;
        if product >> 96 != 0 || x.scale + y.scale > 28 {
            return None;
        }
        // value * 10^scale = product * 10^(scale + over's scale - the product's scale) / over.
        let shift = (scale + z.scale) as i64 - (x.scale + y.scale) as i64;
        let power = *POWERS_OF_TEN_U128.get(shift.unsigned_abs() as usize)?;
        let (numerator, denominator) = if shift >= 0 {
            (product.checked_mul(power)?, over_mantissa as u128)
        } else {
            (product, (over_mantissa as u128).checked_mul(power)?)
        };
        // 64-bit division where both fit (the usual case), a good deal cheaper than 128-bit.
        let (mut quotient, below) = match (u64::try_from(numerator), u64::try_from(denominator)) {
            (Ok(n), Ok(d)) => ((n / d) as u128, (n % d) as u128),
            _ => (numerator / denominator, numerator % denominator),
        };
        let above = denominator - below;
        // |below - above| / (2 * denominator): the distance from the midpoint, in units.
        let off_midpoint = below.abs_diff(above);
        if off_midpoint != 0 && off_midpoint.saturating_mul(1_000_000) < denominator {
            return None;
        }
        if below > above || (below == above && quotient & 1 == 1) {
            quotient += 1;
        }
        if quotient >= 1_000_000_000_000_000_000 {
            return None;
        }
        Some(Amount(Decimal::from_parts(
            quotient as u32,
            (quotient >> 32) as u32,
            0,
            false,
            scale,
        )))
    }

    /// `self` rounded half-to-even at `scale` digits.
    pub fn round_half_even(self, scale: u32) -> Amount {
        // The common case (a non-zero mantissa below 2^64 losing at most 19 digits) in 64-bit
        // integers, as `rust_decimal` computes it: the quotient, one more when the remainder
        // is over half or exactly half with an odd quotient, at `scale` (a test compares).
        let parts = self.0.unpack();
        // Nothing to round: `rust_decimal` returns the value as it is (out of line).
        if parts.scale <= scale {
            return self;
        }
        if parts.scale - scale <= 19 && parts.hi == 0 {
            let mantissa = (parts.mid as u64) << 32 | parts.lo as u64;
            if mantissa != 0 {
                let divisor = 10u64.pow(parts.scale - scale);
                let (mut quotient, remainder) = (mantissa / divisor, mantissa % divisor);
                let half = divisor / 2;
                if remainder > half || (remainder == half && quotient & 1 == 1) {
                    quotient += 1;
                }
                return Amount(Decimal::from_parts(
                    quotient as u32,
                    (quotient >> 32) as u32,
                    0,
                    parts.negative,
                    scale,
                ));
            }
        }
        Amount(
            self.0
                .round_dp_with_strategy(scale, RoundingStrategy::MidpointNearestEven),
        )
    }

    /// `self` rounded towards positive infinity to a whole number.
    pub fn ceil(self) -> Amount {
        Amount(self.0.ceil())
    }

    pub fn min(self, other: Amount) -> Amount {
        if self <= other {
            self
        } else {
            other
        }
    }

    pub fn max(self, other: Amount) -> Amount {
        if self >= other {
            self
        } else {
            other
        }
    }

    /// Canonical text at a fixed scale, e.g. `"1.500000"` for an asset of scale 6.
    pub fn to_scaled_string(self, scale: u32) -> String {
        let mut value = self.0;
        value.rescale(scale);
        value.to_string()
    }

    /// The value as (scale, negative, mantissa) with trailing zeros dropped: the same for
    /// equal values (`1.50` and `1.5`, `0` and `-0.0`). Cheaper than normalizing a `Decimal`.
    pub(crate) fn canonical_parts(self) -> (u32, bool, u128) {
        let parts = self.0.unpack();
        if parts.hi == 0 {
            // The common case, in 64-bit arithmetic (a 128-bit division is a library call).
            let mut mantissa = (parts.mid as u64) << 32 | parts.lo as u64;
            if mantissa == 0 {
                return (0, false, 0);
            }
            let mut scale = parts.scale;
            while scale > 0 && mantissa.is_multiple_of(10) {
                mantissa /= 10;
                scale -= 1;
            }
            return (scale, parts.negative, mantissa as u128);
        }
        let mut mantissa = (parts.hi as u128) << 64 | (parts.mid as u128) << 32 | parts.lo as u128;
        let mut scale = parts.scale;
        while scale > 0 && mantissa.is_multiple_of(10) {
            mantissa /= 10;
            scale -= 1;
        }
        (scale, parts.negative, mantissa)
    }

    /// The canonical text without its sign into `buf` (right-aligned), and whether the value is
    /// negative: what `Display` prints for the normalized `Decimal` (no exponent, no trailing
    /// zeros, `0` for any zero, `0.05` for 5 at scale 2), computed with integer division
    /// instead of `rust_decimal`'s digit-by-digit 96-bit division (a test compares the two).
    fn canonical_text(self, buf: &mut [u8; TEXT_LEN_MAX]) -> (&str, bool) {
        let (scale, negative, mantissa) = self.canonical_parts();
        let scale = scale as usize;
        // The mantissa's digits, right-aligned: the high ones of a mantissa above 2^64 one at
        // a time (rare), the rest two at a time from a table.
        let end = TEXT_LEN_MAX;
        let mut start = end;
        let mut rest = mantissa;
        while rest > u64::MAX as u128 {
            start -= 1;
            buf[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let mut rest = rest as u64;
        while rest >= 100 {
            let pair = (rest % 100) as usize * 2;
            rest /= 100;
            start -= 2;
            buf[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if rest >= 10 {
            let pair = rest as usize * 2;
            start -= 2;
            buf[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else if rest > 0 || start == end {
            // The leading digit, or the `0` of zero.
            start -= 1;
            buf[start] = b'0' + rest as u8;
        }
        let digits = end - start;
        if scale > 0 {
            if digits > scale {
                // The whole part moves one place left for the point.
                let point = end - scale;
                buf.copy_within(start..point, start - 1);
                start -= 1;
                buf[point - 1] = b'.';
            } else {
                // `0.`, then zeros up to the first digit.
                let point = end - scale;
                buf[point..start].fill(b'0');
                buf[point - 1] = b'.';
                buf[point - 2] = b'0';
                start = point - 2;
            }
        }
        let text = std::str::from_utf8(&buf[start..]).expect("ASCII digits");
        (text, negative)
    }

    /// The canonical text (as `Display` prints it) in a string of exactly its length, without
    /// going through `fmt`: the wire form of every amount of every settlement.
    pub fn to_text(self) -> String {
        let mut buf = [0; TEXT_LEN_MAX];
        let (text, negative) = self.canonical_text(&mut buf);
        let mut out = String::with_capacity(text.len() + negative as usize);
        if negative {
            out.push('-');
        }
        out.push_str(text);
        out
    }

    /// The exact representation, scale included (1.0 and 1.00 differ here, unlike
    /// [`Amount::to_bytes`]).
    pub(crate) fn raw_bytes(self) -> [u8; 16] {
        self.0.serialize()
    }

    /// The canonical 16-byte form: the normalized `Decimal`'s bytes, built from
    /// [`Self::canonical_parts`] (64-bit arithmetic in the usual case) rather than
    /// `normalize`'s 96-bit division per digit; a test compares the two. Binary encodings
    /// wrote amounts this way before the compact form (store format 2, snapshot format 3),
    /// and still read it.
    pub fn to_bytes(self) -> [u8; 16] {
        if self.0.scale() == 0 {
            // An integer (a quantity, usually) is canonical as it is, but for the sign of zero.
            return if self.0.is_zero() {
                Decimal::ZERO.serialize()
            } else {
                self.0.serialize()
            };
        }
        let (scale, negative, mantissa) = self.canonical_parts();
        Decimal::from_parts(
            mantissa as u32,
            (mantissa >> 32) as u32,
            (mantissa >> 64) as u32,
            negative,
            scale,
        )
        .serialize()
    }
}

impl std::ops::Neg for Amount {
    type Output = Amount;
    fn neg(self) -> Amount {
        Amount(-self.0)
    }
}

/// Longest canonical text without the sign: 29 digits and the point, or `0.` and 28 digits.
const TEXT_LEN_MAX: usize = 32;

/// `00`, `01`, ... `99`: two digits per division when printing.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The normalized `Decimal`'s text; without a precision the digits come from the integer
/// formatter above, padded and signed by `pad_integral` exactly as `rust_decimal` does.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.precision().is_some() {
            return fmt::Display::fmt(&self.0.normalize(), f);
        }
        let mut buf = [0; TEXT_LEN_MAX];
        let (text, negative) = self.canonical_text(&mut buf);
        f.pad_integral(!negative, "", text)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Most bytes of an amount's compact binary form: a head byte and a 96-bit mantissa. Below 16,
/// the length of the fixed form earlier builds wrote, so a reader tells the two apart.
const COMPACT_BYTES_MAX: usize = 13;

impl Amount {
    /// The compact binary form the store writes (serde's binary `Serialize`'s bytes, without
    /// bincode's length prefix): the buffer and how many of its bytes are the value. A head
    /// byte (`scale << 1 | negative`), then the canonical mantissa's bytes, least significant
    /// first, up to its highest non-zero one (none for zero): 2 to 4 bytes for the usual
    /// amount, where the fixed form takes 16. Public for encoders that write the store's
    /// layout by hand.
    pub fn to_binary(self) -> ([u8; COMPACT_BYTES_MAX], usize) {
        let mut buf = [0u8; COMPACT_BYTES_MAX];
        let (scale, negative, mantissa) = self.canonical_parts();
        buf[0] = (scale as u8) << 1 | negative as u8;
        let len = (128 - mantissa.leading_zeros() as usize).div_ceil(8);
        buf[1..1 + len].copy_from_slice(&mantissa.to_le_bytes()[..len]);
        (buf, 1 + len)
    }

    /// Reads [`Self::to_binary`]'s form, refusing any but the one it writes for the value.
    fn from_compact(bytes: &[u8]) -> Result<Amount, &'static str> {
        let (&head, digits) = bytes
            .split_first()
            .ok_or("an amount needs at least its head byte")?;
        let (scale, negative) = (u32::from(head >> 1), head & 1 == 1);
        if scale > 28 {
            return Err("an amount's scale is at most 28");
        }
        if digits.len() > COMPACT_BYTES_MAX - 1 {
            return Err("an amount's mantissa is at most 96 bits");
        }
        if digits.last() == Some(&0) {
            return Err("an amount's mantissa has no leading zero bytes");
        }
        let mut le = [0u8; 16];
        le[..digits.len()].copy_from_slice(digits);
        let mantissa = u128::from_le_bytes(le);
        if mantissa == 0 && head != 0 {
            return Err("zero is written without sign or scale");
        }
        if scale > 0 && mantissa.is_multiple_of(10) {
            return Err("an amount is written without trailing zeros");
        }
        Ok(Amount(Decimal::from_parts(
            mantissa as u32,
            (mantissa >> 32) as u32,
            (mantissa >> 64) as u32,
            negative,
            scale,
        )))
    }

    /// Reads what [`Self::to_binary`] writes, or the 16 fixed bytes of a `Decimal` that
    /// earlier builds wrote; the error says why the bytes are not an amount.
    pub fn from_binary(bytes: &[u8]) -> Result<Amount, &'static str> {
        match <[u8; 16]>::try_from(bytes) {
            Ok(fixed) => Ok(Amount(Decimal::deserialize(fixed))),
            Err(_) if bytes.len() <= COMPACT_BYTES_MAX => Amount::from_compact(bytes),
            Err(_) => Err("an amount is 1 to 13 bytes, or the 16 bytes of a decimal"),
        }
    }
}

/// Text in human-readable formats (JSON); in binary ones (the log, snapshots, the journal) the
/// compact form of [`Amount::to_binary`]. The 16 fixed bytes earlier builds wrote are still
/// read.
impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_string())
        } else {
            let (buf, len) = self.to_binary();
            serializer.serialize_bytes(&buf[..len])
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Amount::parse("amount", &text).map_err(serde::de::Error::custom)
        } else {
            struct BytesVisitor;
            impl serde::de::Visitor<'_> for BytesVisitor {
                type Value = Amount;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an amount in 1 to 13 bytes, or the 16 bytes of a decimal")
                }
                fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Amount, E> {
                    Amount::from_binary(bytes).map_err(E::custom)
                }
            }
            deserializer.deserialize_bytes(BytesVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: the same values on every run, so a failure can be replayed.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn parse_and_round() {
        let a = Amount::parse("x", "0.0000004").unwrap();
        assert_eq!(a.scale(), 7);
        assert_eq!(
            Amount::parse("x", "2.5").unwrap().round_half_even(0),
            Amount::from_i64(2)
        );
        assert_eq!(
            Amount::parse("x", "3.5").unwrap().round_half_even(0),
            Amount::from_i64(4)
        );
        assert!(Amount::parse("x", "1e3").is_err());
        assert!(Amount::parse("x", "abc").is_err());
        assert!(Amount::parse_positive("x", "0").is_err());
        assert_eq!(Amount::from_i64(3).to_scaled_string(2), "3.00");
    }

    /// An amount is taken as written or refused: nothing `Decimal::from_str` would read some
    /// other way ("1_0" as 10) gets through, and the reason fits what is wrong.
    #[test]
    fn only_plain_decimals_parse() {
        for (text, value) in [
            ("10", "10"),
            (" 1.50 ", "1.50"),
            ("\t-2.5\n", "-2.5"),
            ("+5", "5"),
            (".5", "0.5"),
            ("5.", "5"),
            ("00012.3400", "12.3400"),
            ("12345678901234567890.5", "12345678901234567890.5"),
        ] {
            let parsed = Amount::parse("q", text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(parsed, Amount::parse("q", value).unwrap(), "{text:?}");
        }
        for text in [
            "1_0",
            "5_",
            "1__0",
            "1_.5",
            "_1",
            "1\u{a0}",
            "\u{2003}1",
            "\u{a0}1",
            "1 0",
            "0x10",
            "١٢",
            "５",
            "1,000",
            "NaN",
            "Infinity",
            "inf",
        ] {
            let error = Amount::parse("q", text).expect_err(text);
            assert!(
                error.reason.starts_with("must be a decimal number"),
                "{text:?}: {error}"
            );
        }
        for text in [
            "-", "+", ".", "--5", "+-5", "5..0", "0.5.5", "1._5", "5.5_", "-.",
        ] {
            let error = Amount::parse("q", text).expect_err(text);
            assert!(
                error.reason.starts_with("must be a decimal number"),
                "{text:?} is malformed, not too long: {error}"
            );
        }
        let error = Amount::parse("q", "1234567890123456789012345678901").unwrap_err();
        assert!(error.reason.contains("more digits"), "{error}");
        assert!(Amount::parse("q", "1.5e3")
            .unwrap_err()
            .reason
            .contains("exponent"));
    }

    /// The shortcuts give exactly what `rust_decimal` gives: order, and for sums and
    /// differences the same value, scale and sign (the same bytes).
    #[test]
    fn shortcuts_match_rust_decimal() {
        let mut next = xorshift(0x1234_5678_9abc_def1);
        let mut values = vec![Decimal::ZERO, -Decimal::ZERO, Decimal::MAX, Decimal::MIN];
        for scale in [0, 3, 9, 28] {
            let zero = Decimal::new(0, scale);
            values.extend([
                zero,
                -zero,
                Decimal::new(5, scale),
                zero,
                Decimal::new(-5, scale),
            ]);
        }
        for _ in 0..4000 {
            let bits = next();
            let mantissa = match bits % 4 {
                0 => (next() % 1000) as i128,
                1 => next() as i128,
                2 => ((next() as i128) << 32) ^ next() as i128,
                _ => ((1u128 << 96) - 1 - (next() % 3) as u128) as i128,
            };
            let mantissa = if bits & 16 == 0 { mantissa } else { -mantissa };
            let scale = match (bits >> 8) % 8 {
                7 => ((bits >> 12) % 29) as u32,
                n => n as u32 * 2,
            };
            values.push(Decimal::from_i128_with_scale(mantissa, scale));
        }
        for pair in values.windows(2) {
            let zeros = [Decimal::ZERO, -Decimal::new(0, 5)];
            for (x, y) in [
                (pair[0], pair[1]),
                (pair[0], pair[0]),
                (pair[0], -pair[0]),
                (pair[0], zeros[0]),
                (zeros[1], pair[0]),
                (zeros[0], pair[0]),
                (pair[0], zeros[1]),
            ] {
                let (a, b) = (Amount(x), Amount(y));
                let same = |ours: Option<Amount>, theirs: Option<Decimal>| match (ours, theirs) {
                    (Some(ours), Some(theirs)) => ours.0.serialize() == theirs.serialize(),
                    (None, None) => true,
                    _ => false,
                };
                assert!(same(a.checked_add(b), x.checked_add(y)), "{x:?} + {y:?}");
                assert!(same(a.checked_sub(b), x.checked_sub(y)), "{x:?} - {y:?}");
                assert_eq!(a.cmp(&b), x.cmp(&y), "{x} cmp {y}");
                assert_eq!(a == b, x == y, "{x} == {y}");
            }
        }
    }

    /// Division by a power of ten gives exactly what `rust_decimal` gives (the same bytes).
    #[test]
    fn division_matches_rust_decimal() {
        let mut next = xorshift(0x0d1f_1de5_0f7e_4e11);
        let mut divisors: Vec<Decimal> = (0..=10)
            .map(|k| Decimal::from_i128_with_scale(10i128.pow(k), 0))
            .collect();
        divisors.extend([
            Decimal::new(-1000, 0),
            Decimal::new(10000, 1),
            Decimal::new(1000, 3),
            Decimal::new(3, 0),
            Decimal::new(250, 0),
        ]);
        for _ in 0..200_000 {
            let bits = next();
            let mantissa = match bits % 7 {
                0 => (next() % 100_000) as i128,
                1 => next() as i128,
                2 => (next() % 1000) as i128 * 10i128.pow((next() % 12) as u32),
                3 => ((next() as i128) << 32) ^ next() as i128,
                // Many factors of two and of ten: the zero stripping's every step.
                4 => ((next() % 1000) as i128) << (next() % 50) as u32,
                5 => {
                    (((next() % 100) as i128) << (next() % 30) as u32)
                        * 10i128.pow((next() % 10) as u32)
                }
                _ => 10i128.pow((next() % 19) as u32),
            };
            let mantissa = if bits & 64 == 0 { mantissa } else { -mantissa };
            let scale = match (bits >> 8) % 3 {
                0 => ((bits >> 12) % 29) as u32,
                _ => ((bits >> 12) % 20) as u32,
            };
            let dividend = Decimal::from_i128_with_scale(mantissa, scale);
            for divisor in &divisors {
                let ours = Amount(dividend).checked_div(Amount(*divisor)).map(|a| a.0);
                let theirs = dividend.checked_div(*divisor);
                assert_eq!(
                    ours.map(|d| d.serialize()),
                    theirs.map(|d| d.serialize()),
                    "{dividend:?} / {divisor:?}"
                );
            }
        }
    }

    /// `mul_div_round_half_even` gives the value of `checked_mul`, `checked_div` and
    /// `round_half_even` wherever it answers; it answers for the usual grant amounts, and it
    /// declines next to a midpoint (where `rust_decimal`'s 28-digit quotient could round the
    /// other way).
    #[test]
    fn revenue_shortcut_matches_rust_decimal() {
        let mut next = xorshift(0x4e7e_2ee0_5ca1_ab1e);
        let mut answered = 0;
        let mut declined = 0;
        let cases = 300_000;
        for case in 0..cases {
            let bits = next();
            let mut mantissa = |kind: u64| -> i128 {
                match kind % 6 {
                    0 => (next() % 1_000) as i128,
                    1 => (next() % 1_000_000_000) as i128,
                    2 => next() as i128,
                    3 => ((next() as i128) << 32) ^ next() as i128,
                    4 => 10i128.pow((next() % 19) as u32) * (1 + (next() % 9) as i128),
                    _ => (next() % 100) as i128 * 3 + 1,
                }
            };
            let units = Decimal::from_i128_with_scale(mantissa(bits), ((bits >> 8) % 20) as u32);
            let paid =
                Decimal::from_i128_with_scale(mantissa(bits >> 3), ((bits >> 16) % 19) as u32);
            let mut amount =
                Decimal::from_i128_with_scale(mantissa(bits >> 6), ((bits >> 24) % 19) as u32);
            if case % 5 == 0 {
                // An amount that makes the exact value land on or right next to a midpoint:
                // units * paid / amount = k + 1/2 at the scale, nudged by a little or not at all.
                amount = Decimal::from_i128_with_scale(2 * ((next() % 997) as i128 + 1), 0);
            }
            if bits & (1 << 40) != 0 && case % 7 == 0 {
                amount = -amount;
            }
            let scale = [0, 2, 4, 6, 8, 18][((bits >> 32) % 6) as usize];
            let (units, paid, amount) = (Amount(units), Amount(paid), Amount(amount));
            let slow = units
                .checked_mul(paid)
                .and_then(|x| x.checked_div(amount))
                .map(|x| x.round_half_even(scale));
            match units.mul_div_round_half_even(paid, amount, scale) {
                Some(fast) => {
                    answered += 1;
                    let slow = slow.unwrap_or_else(|| {
                        panic!("{units:?} * {paid:?} / {amount:?}: only the shortcut answers")
                    });
                    assert_eq!(fast, slow, "{units:?} * {paid:?} / {amount:?} at {scale}");
                    assert_eq!(fast.0.scale(), scale);
                }
                None if slow.is_some() => declined += 1,
                None => {}
            }
        }
        // It is the usual path, not a rare one.
        assert!(answered > cases / 3, "answered {answered} of {cases}");
        assert!(declined > 0, "the other way is taken too");
        let amount = |mantissa: i64, scale: u32| Amount(Decimal::new(mantissa, scale));
        // 1/3 at 2 digits: 0.33, answered here.
        assert_eq!(
            amount(1, 0).mul_div_round_half_even(amount(1, 0), amount(3, 0), 2),
            Some(amount(33, 2))
        );
        // 2.5 exactly (a midpoint): to even, 2.
        assert_eq!(
            amount(5, 0).mul_div_round_half_even(amount(1, 0), amount(2, 0), 0),
            Some(amount(2, 0))
        );
        // 0.4999999985...: three billionths from the midpoint, left to `rust_decimal`.
        assert_eq!(
            amount(499_999_999, 0).mul_div_round_half_even(
                amount(1, 0),
                amount(1_000_000_001, 0),
                0
            ),
            None
        );
    }

    /// The rounding shortcut gives exactly what `rust_decimal` gives (the same bytes).
    #[test]
    fn rounding_matches_rust_decimal() {
        let mut next = xorshift(0x0dd_ba11_cafe_f00d);
        for _ in 0..20_000 {
            let bits = next();
            let mantissa = match bits % 5 {
                0 => (next() % 10_000) as i128,
                1 => next() as i128,
                2 => (next() % 1_000) as i128 * 10i128.pow((next() % 8) as u32) + 5,
                3 => 5 * 10i128.pow((next() % 19) as u32),
                _ => ((next() as i128) << 30) ^ next() as i128,
            };
            let mantissa = if bits & 32 == 0 { mantissa } else { -mantissa };
            let value = Decimal::from_i128_with_scale(mantissa, ((bits >> 8) % 29) as u32);
            let value = if bits & 64 == 0 { value } else { -value };
            for scale in [0, 2, 6, (bits >> 20) as u32 % 29] {
                let ours = Amount(value).round_half_even(scale).0;
                let theirs =
                    value.round_dp_with_strategy(scale, RoundingStrategy::MidpointNearestEven);
                assert_eq!(ours.serialize(), theirs.serialize(), "{value:?} at {scale}");
            }
        }
    }

    /// The edge values of `Decimal` (zeros with sign and scale, the extremes, 96-bit and 64-bit
    /// boundaries), then `random` values of every size and scale, the same on every run.
    fn sample_decimals(seed: u64, random: usize) -> Vec<Decimal> {
        let mut next = xorshift(seed);
        let mut values = vec![
            Decimal::ZERO,
            -Decimal::ZERO,
            Decimal::new(0, 7),
            -Decimal::new(0, 28),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from_i128_with_scale(1, 28),
            Decimal::from_i128_with_scale(-1, 28),
            Decimal::from_i128_with_scale((1 << 96) - 1, 28),
            Decimal::from_i128_with_scale(-((1 << 96) - 1), 27),
            Decimal::from_i128_with_scale(u64::MAX as i128, 10),
            Decimal::from_i128_with_scale(u64::MAX as i128 + 1, 19),
            Decimal::from_i128_with_scale(10i128.pow(19), 19),
            Decimal::from_i128_with_scale(10i128.pow(28), 28),
        ];
        for _ in 0..random {
            let bits = next();
            let mantissa = match bits % 6 {
                0 => (next() % 1000) as i128,
                1 => next() as i128,
                2 => (next() % 100_000) as i128 * 10i128.pow((next() % 10) as u32),
                3 => ((next() as i128) << 32) ^ next() as i128,
                4 => (((next() as i128) << 64) ^ next() as i128) & ((1 << 96) - 1),
                _ => 10i128.pow((next() % 29) as u32),
            };
            let mantissa = if bits & 64 == 0 { mantissa } else { -mantissa };
            values.push(Decimal::from_i128_with_scale(
                mantissa,
                ((bits >> 8) % 29) as u32,
            ));
        }
        values
    }

    /// The integer formatter prints exactly what `rust_decimal` prints for the normalized
    /// value, with and without formatting flags; the canonical bytes and scale are the
    /// normalized value's too.
    #[test]
    fn text_matches_rust_decimal() {
        let values = sample_decimals(0x5eed_0f7e_4711, 200_000);
        for value in values {
            let amount = Amount(value);
            assert_eq!(
                amount.to_bytes(),
                value.normalize().serialize(),
                "{value:?}"
            );
            assert_eq!(amount.scale(), value.normalize().scale(), "{value:?}");
            let theirs = value.normalize().to_string();
            assert_eq!(amount.to_text(), theirs, "{value:?}");
            assert_eq!(amount.to_string(), theirs, "{value:?}");
            let normalized = value.normalize();
            assert_eq!(format!("{amount:>40}"), format!("{normalized:>40}"));
            assert_eq!(format!("{amount:<+3}"), format!("{normalized:<+3}"));
            assert_eq!(format!("{amount:040}"), format!("{normalized:040}"));
            // With a precision both take rust_decimal's path (which overflows its buffer for
            // 29 whole digits plus decimals, so only smaller values here).
            if normalized.abs() < Decimal::from(u64::MAX) {
                assert_eq!(format!("{amount:.3}"), format!("{normalized:.3}"));
            }
            assert_eq!(format!("{amount:?}"), theirs);
        }
    }

    /// The plain-text shortcut parses exactly what `rust_decimal` parses (the same bytes), and
    /// leaves everything else (with its error) to it.
    #[test]
    fn parsing_matches_rust_decimal() {
        let mut next = xorshift(0x0bad_cafe_1234_5678);
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "00",
            "0.0",
            "-0.000",
            "1",
            "1.50",
            "007",
            "1.",
            ".5",
            "-",
            "-.",
            "+5",
            "1..2",
            "1.2.3",
            "1_000",
            "12a",
            " 3 ",
            "18446744073709551615",
            "9999999999999999999",
            "10000000000000000000",
            "0.0000000000000000001",
            "1.000000000000000000",
            "0.00000000000000000000000000001",
            "79228162514264337593543950335",
            "79228162514264337593543950336",
            "1e3",
            "",
            "  ",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        for _ in 0..100_000 {
            let bits = next();
            let many = format!("{}{}", next(), next());
            let digits = many[..(bits % 22) as usize + 1].to_string();
            let digits = if bits & 256 == 0 {
                digits
            } else {
                format!("{}{digits}", "0".repeat((bits >> 12) as usize % 4))
            };
            let cut = (bits >> 20) as usize % (digits.len() + 1);
            let mut text = match (bits >> 8) % 4 {
                0 => digits,
                _ => format!("{}.{}", &digits[..cut], &digits[cut..]),
            };
            if bits & 512 != 0 {
                text.insert(0, '-');
            }
            texts.push(text);
        }
        for text in texts {
            let ours = Amount::parse("x", &text).map(|a| a.0.serialize());
            // What rust_decimal reads exactly; what it would round to fit is refused.
            let written = text
                .trim()
                .split_once('.')
                .map_or(0, |(_, fraction)| fraction.len() as u32);
            // What it reads but is not a plain decimal ("1_000") is refused too: only ASCII
            // digits, points and signs may be in it (rust_decimal then refuses the rest).
            let plain = text
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'));
            let theirs = if !plain || text.contains(['e', 'E']) {
                None
            } else {
                Decimal::from_str(text.trim())
                    .ok()
                    .filter(|theirs| theirs.scale() >= written)
            };
            match (ours, theirs) {
                (Ok(ours), Some(theirs)) => {
                    assert_eq!(ours, theirs.normalize().serialize(), "{text:?}")
                }
                (Err(_), None) => {}
                (ours, theirs) => panic!("{text:?}: {ours:?} vs {theirs:?}"),
            }
        }
    }

    #[test]
    fn canonical_parts_ignore_trailing_zeros_and_zero_sign() {
        let parts = |text: &str| Amount::parse("x", text).unwrap().canonical_parts();
        assert_eq!(parts("1.500"), (1, false, 15));
        assert_eq!(
            Amount(Decimal::new(15000, 4)).canonical_parts(),
            (1, false, 15)
        );
        assert_eq!(
            Amount(Decimal::new(-15000, 4)).canonical_parts(),
            (1, true, 15)
        );
        assert_eq!(Amount(Decimal::new(0, 7)).canonical_parts(), (0, false, 0));
        assert_eq!(Amount(-Decimal::new(0, 3)).canonical_parts(), (0, false, 0));
        assert_eq!(
            Amount(Decimal::MAX).canonical_parts(),
            (0, false, (1 << 96) - 1)
        );
        let big = Amount(Decimal::from_i128_with_scale(10i128.pow(27), 20));
        assert_eq!(big.canonical_parts(), (0, false, 10_000_000));
    }

    #[test]
    fn binary_round_trip() {
        let a = Amount::parse("x", "-12.345").unwrap();
        let bytes = bincode::serialize(&a).unwrap();
        assert_eq!(bincode::deserialize::<Amount>(&bytes).unwrap(), a);
    }

    /// An amount as the store and snapshots encode it (bincode, varint lengths): a one-byte
    /// length, then its form.
    fn form(amount: Amount) -> Vec<u8> {
        use bincode::Options;
        let bytes = bincode::DefaultOptions::new().serialize(&amount).unwrap();
        assert_eq!(usize::from(bytes[0]), bytes.len() - 1);
        bytes[1..].to_vec()
    }

    fn read(form: &[u8]) -> Result<Amount, String> {
        use bincode::Options;
        let mut bytes = vec![u8::try_from(form.len()).unwrap()];
        bytes.extend_from_slice(form);
        bincode::DefaultOptions::new()
            .deserialize::<Amount>(&bytes)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_binary_form_is_compact_canonical_and_reads_the_fixed_one() {
        let mut values = sample_decimals(0xc0de_d0c5_2026, 50_000);
        values.extend([Decimal::new(150, 2), Decimal::new(-2, 3)]);
        for value in values {
            let amount = Amount(value);
            let compact = form(amount);
            assert!(compact.len() <= COMPACT_BYTES_MAX, "{value:?}");
            let back = read(&compact).unwrap();
            assert_eq!(back, amount, "{value:?}");
            // One form per value: equal values write the same bytes, and so does what was read.
            assert_eq!(form(Amount(value.normalize())), compact, "{value:?}");
            assert_eq!(form(back), compact, "{value:?}");
            // The 16 fixed bytes earlier builds wrote read as the same amount.
            assert_eq!(read(&amount.to_bytes()).unwrap(), amount, "{value:?}");
        }
        // The usual amounts take 2 to 4 bytes; zero takes 1.
        assert_eq!(form(Amount::ZERO), [0]);
        assert_eq!(form(Amount::parse("x", "0.002").unwrap()), [3 << 1, 2]);
        assert_eq!(form(Amount::parse("x", "-1234.56").unwrap()).len(), 4);
        // Any other form is refused, naming why.
        for (bad, why) in [
            (&[][..], "at least its head byte"),
            (&[1][..], "zero is written without sign or scale"),
            (&[2][..], "zero is written without sign or scale"),
            (&[2, 10][..], "without trailing zeros"),
            (&[0, 5, 0][..], "no leading zero bytes"),
            (&[29 << 1, 1][..], "scale is at most 28"),
            (&[0; 14][..], "an amount is 1 to 13 bytes, or the 16 bytes"),
            (&[0; 17][..], "an amount is 1 to 13 bytes, or the 16 bytes"),
        ] {
            let error = read(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }
}
