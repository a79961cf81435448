//! The store's two hottest values written (and one read) by hand, in exactly the bytes
//! [`crate::codec`]'s bincode writes for them: a ledger entry (its usage events) and a journal
//! entry. bincode reaches each field through serde and `io::Write`, a call chain per integer
//! and per text; with batches of usage events that was 8-9% of every node's CPU (entry and
//! journal encoding) and 13% of a follower's (entry decoding) at 16 x 100.
//!
//! Nothing about the format changes: the writers' output is compared byte for byte with
//! bincode's (this module's tests), and the reader only ever answers what bincode would
//! answer. It reads the entries it knows (every command a usage event or batch, every integer
//! in its shortest form, no byte left over) through the same checked constructors as serde's
//! `Deserialize`; for anything else it declines, and the caller decodes with bincode, so an
//! error (or an unusual value) gets bincode's own answer.
//!
//! bincode's layout (`DefaultOptions`: little-endian, variable-length integers): an unsigned
//! integer below 251 is one byte; otherwise a marker byte (251, 252, 253) and the value in 2,
//! 4 or 8 bytes. A length, an enum's variant index and every `u64` are such integers; a text
//! or byte string is its length and its bytes; an `Option` a byte 0 or 1 and the value; a
//! `bool` one byte; a struct its fields in order, with nothing between them.

use tally_core::{
    AccountId, Amount, Book, Command, Dimensions, Entry, EventId, HoldId, JournalEntry,
    JournalKind, Key, Meter, Posting, RecentDimensions, UsageEvent, PAIRS_MAX,
};

use crate::codec::{FORMAT_VERSION, VALUE_BYTES_MAX};

/// `Command`'s variant indices (its declaration order) of the two the writer and the reader
/// handle themselves.
const COMMAND_USAGE: u64 = 9;
const COMMAND_USAGE_BATCH: u64 = 10;

fn varint(out: &mut Vec<u8>, n: u64) {
    if n <= 250 {
        out.push(n as u8);
    } else if n <= u64::from(u16::MAX) {
        out.push(251);
        out.extend_from_slice(&(n as u16).to_le_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(252);
        out.extend_from_slice(&(n as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

fn text(out: &mut Vec<u8>, value: &str) {
    varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

fn amount(out: &mut Vec<u8>, value: Amount) {
    let (buf, len) = value.to_binary();
    out.push(len as u8);
    out.extend_from_slice(&buf[..len]);
}

fn usage_event(out: &mut Vec<u8>, event: &UsageEvent) {
    text(out, event.event_id.as_str());
    text(out, event.account.as_str());
    text(out, event.meter.as_str());
    amount(out, event.quantity);
    varint(out, event.dimensions.len() as u64);
    for (key, value) in &event.dimensions {
        text(out, key.as_str());
        text(out, value);
    }
    varint(out, event.occurred_at);
    match event.cost {
        None => out.push(0),
        Some(cost) => {
            out.push(1);
            amount(out, cost);
        }
    }
    match &event.hold {
        None => out.push(0),
        Some(hold) => {
            out.push(1);
            text(out, hold.as_str());
        }
    }
}

/// Appends `entry`'s stored form (format-version byte, then bincode's bytes) to `out`: usage
/// commands written here, any other command by bincode in place (bincode frames nothing, so
/// the bytes are the same as bincode's for the whole entry).
pub(crate) fn encode_entry_into(
    entry: &Entry,
    out: &mut Vec<u8>,
) -> Result<(), crate::error::StoreError> {
    encode_entry_limited(entry, out, VALUE_BYTES_MAX)
}

/// [`encode_entry_into`] with the size limit as a parameter (tests use a small one).
fn encode_entry_limited(
    entry: &Entry,
    out: &mut Vec<u8>,
    limit: u64,
) -> Result<(), crate::error::StoreError> {
    let start = out.len();
    out.push(FORMAT_VERSION);
    varint(out, entry.at_ms);
    varint(out, entry.commands.len() as u64);
    for command in &entry.commands {
        match command {
            Command::Usage(event) => {
                varint(out, COMMAND_USAGE);
                usage_event(out, event);
            }
            Command::UsageBatch { events, atomic } => {
                // The usual event takes 70 to 100 bytes: reserve once instead of growing (and
                // copying) the buffer while it is written.
                out.reserve(events.len() * 96 + 8);
                varint(out, COMMAND_USAGE_BATCH);
                varint(out, events.len() as u64);
                for event in events {
                    usage_event(out, event);
                }
                out.push(u8::from(*atomic));
            }
            other => crate::codec::encode_body_into("ledger entry", other, out)?,
        }
    }
    // The size bincode's writer and reader are limited to (far above any entry the proposer
    // builds): an entry no reader would take is not written.
    let written = (out.len() - start - 1) as u64;
    if written > limit {
        out.truncate(start);
        return Err(crate::error::StoreError::Encode {
            what: "ledger entry",
            reason: format!("{written} bytes; at most {limit}"),
        });
    }
    Ok(())
}

fn book(out: &mut Vec<u8>, book: &Book) {
    match book {
        Book::CustomerGrant { account, grant } => {
            out.push(0);
            text(out, account.as_str());
            text(out, grant.as_str());
        }
        Book::Receivable { account } => {
            out.push(1);
            text(out, account.as_str());
        }
        Book::UsageRevenue => out.push(2),
        Book::Breakage => out.push(3),
        Book::PromotionalExpense => out.push(4),
        Book::Funding => out.push(5),
    }
}

fn posting(out: &mut Vec<u8>, posting: &Posting) {
    book(out, &posting.book);
    text(out, posting.asset.as_str());
    amount(out, posting.amount);
}

/// Appends `journal`'s stored form (format-version byte, then bincode's bytes) to `out`.
pub(crate) fn encode_journal_entry_into(journal: &JournalEntry, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    varint(out, journal.seq);
    varint(out, journal.at_ms);
    text(out, journal.account.as_str());
    let tag = match &journal.kind {
        JournalKind::GrantAdded { .. } => 0,
        JournalKind::GrantVoided { .. } => 1,
        JournalKind::GrantExpired { .. } => 2,
        JournalKind::AllowanceReset { .. } => 3,
        JournalKind::DebtRepaid { .. } => 4,
        JournalKind::Usage { .. } => 5,
    };
    out.push(tag);
    match &journal.kind {
        JournalKind::GrantAdded { grant }
        | JournalKind::GrantExpired { grant }
        | JournalKind::AllowanceReset { grant }
        | JournalKind::DebtRepaid { grant } => text(out, grant.as_str()),
        JournalKind::GrantVoided { grant, reason } => {
            text(out, grant.as_str());
            text(out, reason);
        }
        JournalKind::Usage { event_id } => text(out, event_id.as_str()),
    }
    varint(out, journal.postings.len() as u64);
    for p in &journal.postings {
        posting(out, p);
    }
    amount(out, journal.revenue);
    amount(out, journal.cost);
}

/// Reads bincode's layout from a slice; `None` for anything it does not read exactly as
/// bincode would (the caller then asks bincode).
struct Reader<'a> {
    bytes: &'a [u8],
    /// The last few dimension lists read, each with the bytes it was read from (see
    /// [`Reader::dimensions`]).
    dimensions_read: RecentDimensions<'a>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    /// An integer in its shortest form only (bincode also reads longer forms; those are left
    /// to it).
    fn varint(&mut self) -> Option<u64> {
        match self.byte()? {
            small @ 0..=250 => Some(u64::from(small)),
            251 => {
                let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
                (n > 250).then_some(u64::from(n))
            }
            252 => {
                let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
                (n > u32::from(u16::MAX)).then_some(u64::from(n))
            }
            253 => {
                let n = u64::from_le_bytes(self.take(8)?.try_into().ok()?);
                (n > u64::from(u32::MAX)).then_some(n)
            }
            _ => None,
        }
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    fn text(&mut self) -> Option<&'a str> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn amount(&mut self) -> Option<Amount> {
        let len = self.len()?;
        Amount::from_binary(self.take(len)?).ok()
    }

    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// An event's dimensions: the list this reader last read from the same bytes, if any,
    /// else read from their texts. The same bytes read the same list: the form is
    /// self-delimiting (a count, then each text's length before its bytes), so bytes that
    /// start with a list's whole encoding encode that list and nothing after it. Events of an
    /// entry repeat a few dimension sets; a repeat skips the texts' UTF-8 and key checks and
    /// the shared-list lookup.
    fn dimensions(&mut self) -> Option<Dimensions> {
        let start = self.bytes;
        if let Some((len, dimensions)) = self.dimensions_read.made_from_start_of(start) {
            let dimensions = dimensions.clone();
            self.bytes = &start[len..];
            return Some(dimensions);
        }
        let dimensions = self.dimensions_from_texts()?;
        let read = &start[..start.len() - self.bytes.len()];
        // An empty list (one byte) costs nothing to read again.
        if read.len() > 1 {
            self.dimensions_read.remember(read, &dimensions);
        }
        Some(dimensions)
    }

    /// Dimensions read from their texts, shared with the last identical list this thread
    /// decoded or converted (`Dimensions::shared`). More pairs than an event may carry (the
    /// apply rejects such an event) are read into a list of their own.
    fn dimensions_from_texts(&mut self) -> Option<Dimensions> {
        let pairs = self.len()?;
        if pairs <= PAIRS_MAX {
            let mut texts = [("", ""); PAIRS_MAX];
            for slot in &mut texts[..pairs] {
                *slot = (self.text()?, self.text()?);
            }
            let texts = &texts[..pairs];
            return Dimensions::shared(texts, |key| Key::new(key)).ok();
        }
        // Each pair takes at least two bytes: a corrupt length cannot reserve more than the
        // bytes could hold.
        let mut dimensions = Vec::with_capacity(pairs.min(self.bytes.len() / 2));
        for _ in 0..pairs {
            let key = Key::new(self.text()?).ok()?;
            dimensions.push((key, self.text()?.to_string()));
        }
        Some(Dimensions::new(dimensions))
    }

    fn usage_event(&mut self) -> Option<UsageEvent> {
        let event_id = EventId::new(self.text()?).ok()?;
        let account = AccountId::new(self.text()?).ok()?;
        let meter = Meter::new(self.text()?).ok()?;
        let quantity = self.amount()?;
        let dimensions = self.dimensions()?;
        let occurred_at = self.varint()?;
        let cost = match self.flag()? {
            false => None,
            true => Some(self.amount()?),
        };
        let hold = match self.flag()? {
            false => None,
            true => Some(HoldId::new(self.text()?).ok()?),
        };
        Some(UsageEvent {
            event_id,
            account,
            meter,
            quantity,
            dimensions,
            occurred_at,
            cost,
            hold,
        })
    }

    fn command(&mut self) -> Option<Command> {
        match self.varint()? {
            COMMAND_USAGE => Some(Command::Usage(self.usage_event()?)),
            COMMAND_USAGE_BATCH => {
                let len = self.len()?;
                // An event takes at least 10 bytes.
                let mut events = Vec::with_capacity(len.min(self.bytes.len() / 10));
                for _ in 0..len {
                    events.push(self.usage_event()?);
                }
                let atomic = self.flag()?;
                Some(Command::UsageBatch { events, atomic })
            }
            _ => None,
        }
    }
}

/// A stored ledger entry whose commands are all usage events or batches, read without
/// bincode; `None` for any other entry and for anything bincode would refuse or read
/// differently (the caller decodes those with bincode).
pub(crate) fn decode_usage_entry(bytes: &[u8]) -> Option<Entry> {
    decode_usage_entry_limited(bytes, VALUE_BYTES_MAX)
}

/// [`decode_usage_entry`] with the size limit as a parameter (tests use a small one).
fn decode_usage_entry_limited(bytes: &[u8], limit: u64) -> Option<Entry> {
    let (&version, body) = bytes.split_first()?;
    if version != FORMAT_VERSION || body.len() as u64 > limit {
        return None;
    }
    let mut reader = Reader {
        bytes: body,
        dimensions_read: RecentDimensions::default(),
    };
    let at_ms = reader.varint()?;
    let len = reader.len()?;
    let mut commands = Vec::with_capacity(len.min(reader.bytes.len()));
    for _ in 0..len {
        commands.push(reader.command()?);
    }
    reader.bytes.is_empty().then_some(Entry { at_ms, commands })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use tally_core::{AssetCode, AssetSpec, GrantId};

    const ID_BYTES: &[u8] = b"abcXYZ0189_.:@-";

    fn id(rng: &mut SmallRng, max: usize) -> String {
        let len = match rng.gen_range(0..4) {
            0 => max,
            _ => rng.gen_range(1..=max.min(24)),
        };
        (0..len)
            .map(|_| ID_BYTES[rng.gen_range(0..ID_BYTES.len())] as char)
            .collect()
    }

    /// Amounts of every size and scale, negative ones included (the layout does not care).
    fn amount_of(rng: &mut SmallRng) -> Amount {
        let digits = rng.gen_range(1..=28);
        let mut text: String = (0..digits)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        let scale = rng.gen_range(0..=digits.min(12));
        if scale > 0 {
            text.insert(digits - scale, '.');
        }
        if rng.gen_bool(0.2) {
            text.insert(0, '-');
        }
        Amount::parse("amount", &text).unwrap()
    }

    /// Integers at and around every boundary of bincode's variable-length form.
    fn integer(rng: &mut SmallRng) -> u64 {
        const EDGES: [u64; 9] = [
            0,
            250,
            251,
            65_535,
            65_536,
            4_294_967_295,
            4_294_967_296,
            1_700_000_000_000,
            u64::MAX,
        ];
        match rng.gen_range(0..3) {
            0 => EDGES[rng.gen_range(0..EDGES.len())],
            1 => rng.gen_range(0..100_000),
            _ => rng.gen(),
        }
    }

    /// Dimension lists whose encodings share beginnings: one a prefix of another's pairs, a
    /// value a prefix of another's, the same texts as key and value swapped, none, too many.
    fn pooled_dimensions(index: usize) -> Vec<(Key, String)> {
        let pairs: &[(&str, &str)] = match index % 12 {
            0 => &[("model", "large"), ("region", "eu")],
            1 => &[("model", "large"), ("region", "eu-west")],
            2 => &[("model", "large")],
            3 => &[("model", "large"), ("region", "e")],
            4 => &[("model", "small"), ("region", "eu")],
            5 => &[("region", "model")],
            6 => &[("model", "region")],
            7 => &[],
            8 => &[("model", "large"), ("region", "eu"), ("tier", "x")],
            9 => &[("a", ""), ("b", "")],
            10 => &[("model", "larg"), ("region", "eeu")],
            _ => {
                return (0..17)
                    .map(|i| (Key::new(format!("k{i:02}")).unwrap(), "v".into()))
                    .collect()
            }
        };
        pairs
            .iter()
            .map(|(k, v)| (Key::new(k).unwrap(), v.to_string()))
            .collect()
    }

    fn event(rng: &mut SmallRng) -> UsageEvent {
        let mut dimensions: Vec<(Key, String)> = if rng.gen_bool(0.5) {
            pooled_dimensions(rng.gen_range(0..12))
        } else {
            (0..rng.gen_range(0..=17))
                .map(|i| {
                    let value_len = [0, 1, 12, 250, 251, 256][rng.gen_range(0..6)];
                    (Key::new(format!("k{i:02}")).unwrap(), "v".repeat(value_len))
                })
                .collect()
        };
        dimensions.sort();
        UsageEvent {
            event_id: EventId::new(id(rng, EventId::MAX_LEN)).unwrap(),
            account: AccountId::new(id(rng, AccountId::MAX_LEN)).unwrap(),
            meter: Meter::new(id(rng, 16)).unwrap(),
            quantity: amount_of(rng),
            dimensions: dimensions.into(),
            occurred_at: integer(rng),
            cost: rng.gen_bool(0.5).then(|| amount_of(rng)),
            hold: rng
                .gen_bool(0.3)
                .then(|| HoldId::new(id(rng, HoldId::MAX_LEN)).unwrap()),
        }
    }

    fn entry(rng: &mut SmallRng, usage_only: bool) -> Entry {
        let commands = (0..rng.gen_range(0..6))
            .map(|_| match rng.gen_range(0..if usage_only { 2 } else { 4 }) {
                0 => Command::Usage(event(rng)),
                1 => Command::UsageBatch {
                    events: (0..rng.gen_range(0..12)).map(|_| event(rng)).collect(),
                    atomic: rng.gen(),
                },
                2 => Command::Tick,
                _ => Command::CreateAsset(AssetSpec {
                    code: AssetCode::new("USD").unwrap(),
                    scale: rng.gen_range(0..=18),
                }),
            })
            .collect();
        Entry {
            at_ms: integer(rng),
            commands,
        }
    }

    fn journal_entry(rng: &mut SmallRng) -> JournalEntry {
        let account = AccountId::new(id(rng, AccountId::MAX_LEN)).unwrap();
        let grant = || GrantId::new("allowance").unwrap();
        let kind = match rng.gen_range(0..6) {
            0 => JournalKind::GrantAdded { grant: grant() },
            1 => JournalKind::GrantVoided {
                grant: grant(),
                reason: "r".repeat([0, 250, 251, 512][rng.gen_range(0..4)]),
            },
            2 => JournalKind::GrantExpired { grant: grant() },
            3 => JournalKind::AllowanceReset { grant: grant() },
            4 => JournalKind::DebtRepaid { grant: grant() },
            _ => JournalKind::Usage {
                event_id: EventId::new(id(rng, EventId::MAX_LEN)).unwrap(),
            },
        };
        let postings = (0..rng.gen_range(0..6))
            .map(|_| Posting {
                book: match rng.gen_range(0..6) {
                    0 => Book::CustomerGrant {
                        account: account.clone(),
                        grant: grant(),
                    },
                    1 => Book::Receivable {
                        account: account.clone(),
                    },
                    2 => Book::UsageRevenue,
                    3 => Book::Breakage,
                    4 => Book::PromotionalExpense,
                    _ => Book::Funding,
                },
                asset: AssetCode::new("CREDITS_2").unwrap(),
                amount: amount_of(rng),
            })
            .collect();
        JournalEntry {
            seq: integer(rng),
            at_ms: integer(rng),
            account,
            kind,
            postings,
            revenue: amount_of(rng),
            cost: amount_of(rng),
        }
    }

    fn written(entry: &Entry) -> Vec<u8> {
        let mut out = Vec::new();
        encode_entry_into(entry, &mut out).unwrap();
        out
    }

    #[test]
    fn entries_are_written_as_bincode_writes_them_and_read_back() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut read_by_hand = 0;
        for round in 0..1_000 {
            let entry = entry(&mut rng, round % 2 == 0);
            let bytes = written(&entry);
            assert_eq!(bytes, codec::encode("entry", &entry).unwrap(), "{entry:?}");
            let usage_only = entry
                .commands
                .iter()
                .all(|c| matches!(c, Command::Usage(_) | Command::UsageBatch { .. }));
            match decode_usage_entry(&bytes) {
                Some(read) => {
                    assert!(usage_only, "{entry:?}");
                    assert_eq!(read, entry);
                    read_by_hand += 1;
                }
                None => assert!(!usage_only, "declined a usage entry: {entry:?}"),
            }
            assert_eq!(codec::decode::<Entry>("entry", &bytes).unwrap(), entry);
        }
        assert!(read_by_hand > 500, "{read_by_hand}");
    }

    /// Events that repeat dimension lists, more lists than a reader remembers and lists whose
    /// encodings begin alike, in every order: each event reads back with its own list.
    #[test]
    fn repeated_dimension_lists_read_back_as_written() {
        let mut rng = SmallRng::seed_from_u64(11);
        for round in 0..200 {
            let events: Vec<UsageEvent> = (0..rng.gen_range(1..60))
                .map(|i| {
                    let mut event = event(&mut rng);
                    let index = match round % 3 {
                        0 => i,
                        1 => i % 3,
                        _ => rng.gen_range(0..12),
                    };
                    event.dimensions = pooled_dimensions(index).into();
                    event
                })
                .collect();
            let entry = Entry {
                at_ms: 1,
                commands: vec![Command::UsageBatch {
                    events,
                    atomic: false,
                }],
            };
            let bytes = written(&entry);
            assert_eq!(decode_usage_entry(&bytes).as_ref(), Some(&entry));
            assert_eq!(codec::decode::<Entry>("entry", &bytes).unwrap(), entry);
        }
    }

    #[test]
    fn journal_entries_are_written_as_bincode_writes_them() {
        let mut rng = SmallRng::seed_from_u64(11);
        for _ in 0..5_000 {
            let journal = journal_entry(&mut rng);
            let mut bytes = Vec::new();
            encode_journal_entry_into(&journal, &mut bytes);
            assert_eq!(
                bytes,
                codec::encode("journal", &journal).unwrap(),
                "{journal:?}"
            );
        }
    }

    /// Whatever the hand-written reader reads from damaged bytes, bincode reads the same;
    /// where bincode refuses, it declines.
    #[test]
    fn the_reader_answers_nothing_bincode_would_not() {
        let mut rng = SmallRng::seed_from_u64(13);
        let mut declined = 0;
        for _ in 0..100 {
            let one = Entry {
                at_ms: integer(&mut rng),
                commands: vec![Command::UsageBatch {
                    events: (0..rng.gen_range(1..4)).map(|_| event(&mut rng)).collect(),
                    atomic: rng.gen(),
                }],
            };
            let bytes = written(&one);
            let mut cases: Vec<Vec<u8>> = (0..200)
                .map(|_| bytes[..rng.gen_range(0..bytes.len())].to_vec())
                .collect();
            for _ in 0..300 {
                let mut flipped = bytes.clone();
                let at = rng.gen_range(0..flipped.len());
                flipped[at] ^= 1 << rng.gen_range(0..8);
                cases.push(flipped);
            }
            let mut longer = bytes.clone();
            longer.push(0);
            cases.push(longer);
            for case in cases {
                let by_bincode = codec::decode::<Entry>("entry", &case).ok();
                match decode_usage_entry(&case) {
                    Some(read) => assert_eq!(Some(read), by_bincode, "{case:?}"),
                    None => declined += 1,
                }
            }
        }
        assert!(declined > 1_000, "{declined}");
    }

    /// Above the size limit (bincode's options: 256 MiB of value after the version byte),
    /// the writer refuses, leaving `out` as it was, and the reader declines; at the limit both
    /// go ahead.
    #[test]
    fn the_size_limit_is_bincodes() {
        let mut rng = SmallRng::seed_from_u64(17);
        let entry = Entry {
            at_ms: 1,
            commands: vec![Command::UsageBatch {
                events: (0..5).map(|_| event(&mut rng)).collect(),
                atomic: false,
            }],
        };
        let bytes = written(&entry);
        let body = (bytes.len() - 1) as u64;
        let mut out = vec![7];
        encode_entry_limited(&entry, &mut out, body).unwrap();
        assert_eq!(out[1..], bytes[..]);
        assert_eq!(
            decode_usage_entry_limited(&bytes, body),
            Some(entry.clone())
        );
        let mut out = vec![7];
        let error = encode_entry_limited(&entry, &mut out, body - 1).unwrap_err();
        assert!(error.to_string().contains("at most"), "{error}");
        assert_eq!(out, [7]);
        assert_eq!(decode_usage_entry_limited(&bytes, body - 1), None);
    }

    /// A longer-than-needed integer (which this build never writes, but bincode reads) is left
    /// to bincode, and `EncodedEntry::decode` still reads the entry.
    #[test]
    fn longer_integer_forms_are_left_to_bincode() {
        let entry = Entry {
            at_ms: 5,
            commands: vec![],
        };
        let long_form = vec![FORMAT_VERSION, 251, 5, 0, 0];
        assert_eq!(decode_usage_entry(&long_form), None);
        assert_eq!(codec::decode::<Entry>("entry", &long_form).unwrap(), entry);
        let decoded = crate::EncodedEntry::decode(long_form).unwrap();
        assert_eq!(decoded.entry(), &entry);
    }
}
