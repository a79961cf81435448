//! Identifiers with checked constructors: an id that exists has already been validated.
//!
//! Every id is a thin wrapper over an `Arc<str>` (cloning one is a reference count, which
//! matters on the settlement path), except account ids, which keep up to 23 bytes in place
//! (`SmolStr`); the wrapper's constructor is the only way to build one, so the core never
//! sees an empty, oversized or oddly-charactered id.

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::fmt;
use std::sync::Arc;

use crate::error::InvalidInput;

/// The bytes an id may contain: `ALLOWED[b]` says whether byte `b` may appear. One table
/// load per byte: every event's ids are checked, on the leader as it reads a request and on
/// every node as it decodes a log entry.
type Allowed = [bool; 256];

/// The table of the bytes the `const fn` `$allowed` accepts, built at compile time.
macro_rules! allowed_bytes {
    ($allowed:expr) => {{
        let mut table: Allowed = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = $allowed(b as u8);
            b += 1;
        }
        table
    }};
}

fn check(
    field: &'static str,
    value: &str,
    max_len: usize,
    allowed: &Allowed,
    allowed_text: &str,
) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(InvalidInput::new(
            field,
            format!("is {} bytes long; at most {max_len} allowed", value.len()),
        ));
    }
    // One table load per byte and no branch (the usual id passes whole); the first bad byte
    // is looked for only when there is one.
    let passes = value
        .bytes()
        .fold(true, |ok, b| ok & allowed[usize::from(b)]);
    // The character named whole: a byte of a UTF-8 sequence is not a character.
    let bad = match passes {
        true => None,
        false => value
            .chars()
            .find(|c| !c.is_ascii() || !allowed[usize::from(*c as u8)]),
    };
    if let Some(bad) = bad {
        return Err(InvalidInput::new(
            field,
            format!("contains {bad:?}; allowed characters are {allowed_text}"),
        ));
    }
    Ok(())
}

/// What an id's text is kept in.
trait IdText {
    fn text(&self) -> &str;
    /// True only if both are the same text in memory (then they are equal without comparing).
    fn same(&self, other: &Self) -> bool;
}

impl IdText for Arc<str> {
    #[inline]
    fn text(&self) -> &str {
        self
    }
    #[inline]
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

impl IdText for SmolStr {
    #[inline]
    fn text(&self) -> &str {
        self.as_str()
    }
    #[inline]
    fn same(&self, _other: &Self) -> bool {
        false
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allowed:expr, $allowed_text:literal) => {
        string_id!($(#[$doc])* $name, $field, $max, $allowed, $allowed_text, Arc<str>, Arc::from);
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allowed:expr, $allowed_text:literal, $make:path) => {
        string_id!($(#[$doc])* $name, $field, $max, $allowed, $allowed_text, Arc<str>, $make);
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allowed:expr, $allowed_text:literal, $repr:ty, $make:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name($repr);

        /// Deserialized from the text as the decoder holds it (validated as [`Self::new`]
        /// does), without an intermediate `String`: entry decoding on followers builds several
        /// ids per event.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;
                impl serde::de::Visitor<'_> for TextVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "the text of a {}", $field)
                    }
                    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<$name, E> {
                        $name::new(value).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(TextVisitor)
            }
        }

        /// The text's order, found without comparing bytes when both share one allocation
        /// (an account's per-meter figures are keyed with the price book's own meter name, so
        /// the lookups of every settlement find theirs this way). Equality already takes
        /// this shortcut in `Arc`.
        impl Ord for $name {
            #[inline]
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if self.0.same(&other.0) {
                    std::cmp::Ordering::Equal
                } else {
                    self.0.text().cmp(other.0.text())
                }
            }
        }

        impl PartialOrd for $name {
            #[inline]
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        /// Serialized as a plain string, without an intermediate allocation.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.0.text())
            }
        }

        impl $name {
            /// Longest accepted id, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `value` and wraps it; the error names the field and the reason.
            pub fn new(value: impl AsRef<str>) -> Result<Self, InvalidInput> {
                Self::parse_as($field, value)
            }

            /// Like [`Self::new`], but the error names `field` (for nested wire fields).
            /// Takes the text by reference: the `Arc` is its one allocation (going through a
            /// `String` first would copy the text twice, for every id of every event).
            pub fn parse_as(field: &'static str, value: impl AsRef<str>) -> Result<Self, InvalidInput> {
                const ALLOWED: Allowed = allowed_bytes!($allowed);
                let value = value.as_ref();
                check(field, value, $max, &ALLOWED, $allowed_text)?;
                Ok(Self($make(value)))
            }

            pub fn as_str(&self) -> &str {
                self.0.text()
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidInput;
            fn try_from(value: String) -> Result<Self, InvalidInput> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.text().to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.text())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0.text())
            }
        }
    };
}

const fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-')
}

const fn printable_ascii(b: u8) -> bool {
    b >= 0x20 && b <= 0x7e
}

const fn asset_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

string_id!(
    /// An asset code such as `USD` or `CREDITS`: `[A-Z0-9_]{1,16}`.
    AssetCode, "asset", 16, asset_byte, "A-Z, 0-9 and _"
);
string_id!(
    /// A customer account id: `[A-Za-z0-9_.:@-]{1,128}`. Kept in place up to 23 bytes (longer
    /// ones shared like the other ids): settling an event finds its account by comparing ids,
    /// and an id held behind a pointer cost a cache miss of its own on every event (the
    /// comparison was 5.6% of a follower at 4 x 8,190); in place it sits beside the account's
    /// pointer in the account table, and decoding an event allocates no account text.
    AccountId, "account", 128, id_byte, "A-Z, a-z, 0-9 and _ . : @ -", SmolStr, SmolStr::new
);
string_id!(
    /// A grant id, unique within its account. Many accounts use the same few grant ids, so
    /// an id shares its text with the last identical one built (see `share`).
    GrantId, "grant_id", 128, id_byte, "A-Z, a-z, 0-9 and _ . : @ -", crate::share::text
);
string_id!(
    /// A hold id, unique within its account while the hold is remembered.
    HoldId, "hold_id", 128, id_byte, "A-Z, a-z, 0-9 and _ . : @ -"
);
string_id!(
    /// A price book id.
    BookId, "price_book", 128, id_byte, "A-Z, a-z, 0-9 and _ . : @ -"
);
string_id!(
    /// A meter name such as `tokens`. Every event names one and most name the same few, so a
    /// meter shares its text with the last identical one built (see `share`): decoding an
    /// entry allocates no meter text.
    Meter, "meter", 128, id_byte, "A-Z, a-z, 0-9 and _ . : @ -", crate::share::text
);
string_id!(
    /// A usage event id: 1..=128 printable ASCII characters, unique per account.
    EventId, "event_id", 128, printable_ascii, "printable ASCII (0x20..=0x7e)"
);
string_id!(
    /// A dimension key or metadata key, shared like [`Meter`] (events repeat the same keys).
    Key, "key", 64, id_byte, "A-Z, a-z, 0-9 and _ . : @ -", crate::share::text
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(AccountId::new("cust_1@acme.io").is_ok());
        let err = AccountId::new("").unwrap_err();
        assert_eq!(err.field, "account");
        assert!(AccountId::new("a b").unwrap_err().reason.contains("' '"));
        assert!(AccountId::new("x".repeat(129)).is_err());
        assert!(AssetCode::new("usd").is_err());
        assert!(AssetCode::new("USD").is_ok());
        assert!(EventId::new("evt 1/2").is_ok());
        assert!(EventId::new("evt\n").is_err());
    }

    /// Every ASCII byte, alone and in the middle of an otherwise valid id, is accepted exactly
    /// when the id's documented character set holds it, and a rejection names the first bad
    /// character; text beyond ASCII is refused by every id.
    #[test]
    fn each_id_accepts_exactly_its_characters() {
        let id_chars = |c: char| c.is_ascii_alphanumeric() || "_.:@-".contains(c);
        let printable = |c: char| (' '..='~').contains(&c);
        let asset = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
        for b in 0u8..=127 {
            let c = b as char;
            for text in [c.to_string(), format!("AB{c}9Z")] {
                assert_eq!(AccountId::new(&text).is_ok(), id_chars(c), "{text:?}");
                assert_eq!(Meter::new(&text).is_ok(), id_chars(c), "{text:?}");
                assert_eq!(Key::new(&text).is_ok(), id_chars(c), "{text:?}");
                assert_eq!(EventId::new(&text).is_ok(), printable(c), "{text:?}");
                assert_eq!(AssetCode::new(&text).is_ok(), asset(c), "{text:?}");
            }
        }
        for text in ["caf\u{e9}", "\u{1F600}"] {
            assert!(AccountId::new(text).is_err());
            assert!(EventId::new(text).is_err());
            assert!(AssetCode::new(text).is_err());
        }
        let err = EventId::new("ok\tthen\n").unwrap_err();
        assert_eq!(err.field, "event_id");
        assert!(err.reason.contains("'\\t'"), "{}", err.reason);
    }

    /// Account ids are kept in place up to 23 bytes and behind a shared pointer beyond: both
    /// forms compare, order, hash, print and encode exactly as their text does, including
    /// against each other.
    #[test]
    fn account_ids_behave_as_their_text_in_place_or_shared() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
            let mut hasher = DefaultHasher::new();
            value.hash(&mut hasher);
            hasher.finish()
        }
        assert_eq!(std::mem::size_of::<AccountId>(), 24);
        let texts: Vec<String> = [1, 2, 22, 23, 24, 25, 64, 128]
            .iter()
            .flat_map(|&len| {
                let base = "a".repeat(len - 1);
                [format!("{base}a"), format!("{base}b"), format!("b{base}")]
            })
            .collect();
        let ids: Vec<AccountId> = texts.iter().map(|t| AccountId::new(t).unwrap()).collect();
        for (text, id) in texts.iter().zip(&ids) {
            assert_eq!(id.as_str(), text);
            assert_eq!(id.to_string(), *text);
            assert_eq!(format!("{id:?}"), format!("{text:?}"));
            assert_eq!(String::from(id.clone()), *text);
            assert_eq!(hash_of(id), hash_of(text.as_str()));
            let encoded = bincode::serialize(id).unwrap();
            assert_eq!(encoded, bincode::serialize(text).unwrap());
            assert_eq!(bincode::deserialize::<AccountId>(&encoded).unwrap(), *id);
        }
        for (a_text, a) in texts.iter().zip(&ids) {
            for (b_text, b) in texts.iter().zip(&ids) {
                assert_eq!(a == b, a_text == b_text, "{a_text} == {b_text}");
                assert_eq!(a.cmp(b), a_text.cmp(b_text), "{a_text} cmp {b_text}");
            }
        }
    }
}
