//! The dedup table: every settled event of the dedup window, remembered compactly enough to
//! tell a retry from a conflict and to give the original result back.
//!
//! Records are kept in the order they settled, which is also the order they expire in (ledger
//! time only moves forward and the window is fixed at init), so forgetting is dropping from
//! the front. Each record is a short byte string (the event id, the fingerprint and the result,
//! amounts in a variable-length form, zero amounts left out), appended to large chunks: no
//! allocation per event, and about 70 bytes per event id where a two-level `BTreeMap` of
//! structs took about 400. A hash index over (account ordinal, event id) finds a record; it
//! holds each record's location and the low half of its key hash (so growing or tidying the
//! index rehashes without reading a record: with the records spread over megabytes of chunks,
//! reading each one back was 6% of a follower's time at 4 x 8,190) and is rebuilt from the
//! records when a snapshot is decoded, so it never reaches an encoding or the state hash. It
//! is split into 4,096 tables that grow one at a time, so no settlement waits while every
//! remembered id is rehashed. Its hash function is fixed (no random seed: the crate draws no
//! randomness), and iteration never touches it.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashTable;
use rust_decimal::Decimal;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::Amount;

/// What a record remembers of a settlement (grants and the price book by index: 0 = no book,
/// else book ordinal + 1).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Remembered {
    pub fingerprint: u64,
    pub settled_at: u64,
    pub charged: Amount,
    pub balance_after: Amount,
    pub debt_created: Amount,
    pub from_hold: Amount,
    pub revenue: Amount,
    pub cost: Amount,
    pub price_book: u32,
    pub price_version: u32,
    pub draws: Vec<(u32, Amount)>,
}

/// Record layout: ordinal (4 bytes LE), settled_at (8), fingerprint (8), event id length (1)
/// and bytes; a byte of flags; the amounts among charged, balance after, debt created, from
/// hold, revenue and cost that are not zero (flag bits 0 to 5 say which); the price book and
/// the version; then the draws: with flag bit 6, one draw of the whole charge and only its
/// grant index, else the draw count and each draw's grant index and amount. Numbers are
/// LEB128 varints. Zero amounts and the usual single draw thus take no bytes.
const ID_LEN_AT: usize = 20;

/// Flag bit: the only draw is of the whole charge.
const ONE_DRAW_OF_CHARGE: u8 = 1 << 6;

/// Records are appended to chunks of this many bytes (a record longer than that gets a chunk
/// of its own size); a chunk is freed once every record in it is forgotten.
const CHUNK: usize = 64 * 1024;

/// Where a record starts: its chunk's sequence number (high 32 bits) and its byte position in
/// that chunk (low 32 bits).
type Location = u64;

/// An index slot: a record's location and its key hash, which is a function of the hash's low
/// 32 bits (see [`spread`]): 12 bytes, where a `u64` hash beside the location would take 16.
#[derive(Clone, Copy)]
struct Slot {
    hash: u32,
    chunk: u32,
    position: u32,
}

impl Slot {
    fn new(hash: u64, location: Location) -> Slot {
        Slot {
            hash: hash as u32,
            chunk: (location >> 32) as u32,
            position: location as u32,
        }
    }

    fn location(self) -> Location {
        (self.chunk as u64) << 32 | self.position as u64
    }

    fn hash(self) -> u64 {
        spread(self.hash)
    }
}

/// The index is split into this many hash tables, each growing on its own: a table that is
/// full doubles by moving every slot it holds at once, so one table of every remembered id
/// paused the settlement that made it grow for as long as moving them all took (measured: 24
/// ms at 917,504 ids, 99 ms at 3,670,016, on every node at the same log index; a day's window
/// at 10,000 events/s holds 864 million). Split, a growth moves 1/4,096 of them. An empty
/// table allocates nothing; the tables themselves take 128 KiB.
const SHARDS: usize = 4096;

/// A slot's table: 12 bits of the hash's upper half (the mixed one), apart from the low bits
/// a table picks its bucket from and the top 7 it filters a bucket group by.
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize & (SHARDS - 1)
}

/// Record locations, hashed by (account ordinal, event id), in [`SHARDS`] tables.
#[derive(Clone)]
struct Index {
    shards: Box<[HashTable<Slot>]>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
        }
    }
}

impl Index {
    fn find(&self, hash: u64, eq: impl FnMut(&Slot) -> bool) -> Option<&Slot> {
        self.shards[shard_of(hash)].find(hash, eq)
    }

    fn insert(&mut self, hash: u64, slot: Slot) {
        self.shards[shard_of(hash)].insert_unique(hash, slot, |slot| slot.hash());
    }

    fn remove(&mut self, hash: u64, location: Location) {
        if let Ok(entry) =
            self.shards[shard_of(hash)].find_entry(hash, |slot| slot.location() == location)
        {
            entry.remove();
        }
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }
}

/// The index's 64-bit hash from 32 bits: those bits below (hashbrown picks the bucket from
/// the low bits) and a multiplicative mix of all of them above (it filters candidates in a
/// bucket group by the top 7 bits, which must not repeat the bucket's).
fn spread(low: u32) -> u64 {
    (low as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xffff_ffff_0000_0000 | low as u64
}

#[derive(Clone, Default)]
pub(crate) struct Dedup {
    /// Records, oldest first, each a varint length and then its bytes. No allocation per
    /// record, and no pointer per record beside its bytes. Shared (`Arc`) with a snapshot
    /// being written (see [`Dedup::frozen`]): a chunk it holds is never written to again, so
    /// the snapshot reads the records as they were when it began while apply goes on.
    chunks: VecDeque<Arc<Vec<u8>>>,
    /// Sequence number of `chunks[0]`.
    first_chunk: u64,
    /// Position of the oldest record in `chunks[0]`.
    head: usize,
    /// Number of records.
    count: usize,
    /// Record locations, hashed by (account ordinal, event id).
    index: Index,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
}

/// Where the records ended at some point, to forget what came after (an aborted atomic batch).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DedupMark {
    chunk: u64,
    position: usize,
    count: usize,
}

impl PartialEq for Dedup {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.records().eq(other.records())
    }
}

impl Eq for Dedup {}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dedup({} records)", self.count)
    }
}

/// Reads the varint length at `position` of `chunk`: (start of the record's bytes, length).
fn record_span(chunk: &[u8], position: usize) -> (usize, usize) {
    let mut len = 0usize;
    let mut at = position;
    let mut shift = 0;
    loop {
        let byte = chunk[at];
        at += 1;
        len |= ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            return (at, len);
        }
        shift += 7;
    }
}

impl Dedup {
    pub fn len(&self) -> usize {
        self.count
    }

    fn chunk(&self, location: Location) -> &[u8] {
        &self.chunks[((location >> 32) - self.first_chunk) as usize]
    }

    fn record(&self, location: Location) -> &[u8] {
        let chunk = self.chunk(location);
        let (start, len) = record_span(chunk, (location & 0xffff_ffff) as usize);
        &chunk[start..start + len]
    }

    /// Every record with its location, oldest first.
    fn records_from(&self, chunk: u64, position: usize) -> impl Iterator<Item = (Location, &[u8])> {
        let chunks = self.chunks.iter().skip((chunk - self.first_chunk) as usize);
        records_in(chunks, position)
            .map(move |(n, at, record)| ((chunk + n as u64) << 32 | at as u64, record))
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.records_from(self.first_chunk, self.head)
            .map(|(_, record)| record)
    }

    /// The index hash of `event_id` of account `ordinal`: settling an event looks its id up
    /// and then remembers it, hashing it once for both.
    pub fn hash(ordinal: u32, event_id: &str) -> u64 {
        key_hash(ordinal, event_id.as_bytes())
    }

    /// The remembered settlement of `event_id` of account `ordinal`.
    #[cfg(test)]
    pub fn get(&self, ordinal: u32, event_id: &str) -> Option<Remembered> {
        self.get_hashed(Self::hash(ordinal, event_id), ordinal, event_id)
    }

    /// [`Self::get`] with `hash` = [`Self::hash`]`(ordinal, event_id)`.
    pub fn get_hashed(&self, hash: u64, ordinal: u32, event_id: &str) -> Option<Remembered> {
        let slot = self.index.find(hash, |slot| {
            record_is(self.record(slot.location()), ordinal, event_id.as_bytes())
        })?;
        Some(decode(self.record(slot.location())))
    }

    /// Whether `event_id` of account `ordinal` is remembered (without decoding the record).
    #[cfg(test)]
    pub fn contains(&self, ordinal: u32, event_id: &str) -> bool {
        self.contains_hashed(Self::hash(ordinal, event_id), ordinal, event_id)
    }

    /// [`Self::contains`] with `hash` = [`Self::hash`]`(ordinal, event_id)`.
    pub fn contains_hashed(&self, hash: u64, ordinal: u32, event_id: &str) -> bool {
        self.index
            .find(hash, |slot| {
                record_is(self.record(slot.location()), ordinal, event_id.as_bytes())
            })
            .is_some()
    }

    /// Remembers a settlement; the caller checked that the event id is not remembered yet.
    /// `remembered.draws` is ignored: the draws are `draws` (so the caller need not collect
    /// them).
    #[cfg(test)]
    pub fn insert(
        &mut self,
        ordinal: u32,
        event_id: &str,
        remembered: &Remembered,
        draws: impl ExactSizeIterator<Item = (u32, Amount)>,
    ) {
        let hash = Self::hash(ordinal, event_id);
        self.insert_hashed(hash, ordinal, event_id, remembered, draws);
    }

    /// [`Self::insert`] with `hash` = [`Self::hash`]`(ordinal, event_id)`.
    pub fn insert_hashed(
        &mut self,
        hash: u64,
        ordinal: u32,
        event_id: &str,
        remembered: &Remembered,
        draws: impl ExactSizeIterator<Item = (u32, Amount)>,
    ) {
        debug_assert_eq!(hash, Self::hash(ordinal, event_id));
        let id = event_id.as_bytes();
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        // Room for everything but the event id and the draws; amounts take at most 15 bytes.
        buf.reserve(ID_LEN_AT + 1 + id.len() + 6 * 15 + 3 * 5 + draws.len() * 20);
        buf.extend_from_slice(&ordinal.to_le_bytes());
        buf.extend_from_slice(&remembered.settled_at.to_le_bytes());
        buf.extend_from_slice(&remembered.fingerprint.to_le_bytes());
        buf.push(u8::try_from(id.len()).expect("event ids are at most 128 bytes"));
        buf.extend_from_slice(id);
        let amounts = [
            remembered.charged,
            remembered.balance_after,
            remembered.debt_created,
            remembered.from_hold,
            remembered.revenue,
            remembered.cost,
        ];
        let mut draws = draws.peekable();
        let one_draw_of_charge =
            draws.len() == 1 && draws.peek().is_some_and(|(_, a)| *a == remembered.charged);
        let mut flags = if one_draw_of_charge {
            ONE_DRAW_OF_CHARGE
        } else {
            0
        };
        for (bit, amount) in amounts.iter().enumerate() {
            if !amount.is_zero() {
                flags |= 1 << bit;
            }
        }
        buf.push(flags);
        for amount in amounts {
            if !amount.is_zero() {
                put_amount(&mut buf, amount);
            }
        }
        put_varint(&mut buf, remembered.price_book as u128);
        put_varint(&mut buf, remembered.price_version as u128);
        if one_draw_of_charge {
            let (grant, _) = draws.next().expect("one draw");
            put_varint(&mut buf, grant as u128);
        } else {
            put_varint(&mut buf, draws.len() as u128);
            for (grant, amount) in draws {
                put_varint(&mut buf, grant as u128);
                put_amount(&mut buf, amount);
            }
        }
        self.push_record(&buf, hash);
        self.scratch = buf;
    }

    /// Appends an encoded record and indexes it under `hash`.
    fn push_record(&mut self, record: &[u8], hash: u64) {
        let needed = record.len() + 5;
        // A chunk shared with a snapshot being written counts as full.
        let fits = self.chunks.back_mut().is_some_and(|chunk| {
            Arc::get_mut(chunk).is_some_and(|chunk| chunk.capacity() - chunk.len() >= needed)
        });
        if !fits {
            self.chunks
                .push_back(Arc::new(Vec::with_capacity(CHUNK.max(needed))));
            if self.chunks.len() == 1 {
                self.head = 0;
            }
        }
        let chunk_seq = self.first_chunk + self.chunks.len() as u64 - 1;
        let chunk = Arc::get_mut(self.chunks.back_mut().expect("pushed above"))
            .expect("not shared: checked above");
        let location = chunk_seq << 32 | chunk.len() as u64;
        put_varint(chunk, record.len() as u128);
        chunk.extend_from_slice(record);
        self.count += 1;
        self.index.insert(hash, Slot::new(hash, location));
    }

    fn unindex(&mut self, location: Location, hash: u64) {
        self.index.remove(hash, location);
    }

    /// Forgets, oldest first, every record whose `settled_at` makes `expired` true.
    pub fn forget_while(&mut self, expired: impl Fn(u64) -> bool) {
        while self.count > 0 {
            let front_len = self.chunks[0].len();
            if self.head >= front_len {
                // Every record of the oldest chunk is forgotten: free it.
                self.chunks.pop_front();
                self.first_chunk += 1;
                self.head = 0;
                continue;
            }
            let location = self.first_chunk << 32 | self.head as u64;
            let (start, len) = record_span(&self.chunks[0], self.head);
            let record = &self.chunks[0][start..start + len];
            if !expired(settled_at(record)) {
                break;
            }
            let hash = record_hash(record);
            self.head = start + len;
            self.count -= 1;
            self.unindex(location, hash);
        }
        if self.count == 0 {
            // Nothing left: start over in one (emptied) chunk.
            self.chunks.truncate(1);
            if let Some(chunk) = self.chunks.front_mut() {
                match Arc::get_mut(chunk) {
                    Some(chunk) => chunk.clear(),
                    None => *chunk = Arc::new(Vec::new()),
                }
            }
            self.head = 0;
        }
    }

    /// Where the records end now.
    pub fn mark(&self) -> DedupMark {
        DedupMark {
            chunk: self.first_chunk + self.chunks.len().saturating_sub(1) as u64,
            position: self.chunks.back().map_or(0, |chunk| chunk.len()),
            count: self.count,
        }
    }

    /// Forgets every record added after `mark` (undoing an aborted atomic batch).
    pub fn rollback(&mut self, mark: DedupMark) {
        let later: Vec<(Location, u64)> = self
            .records_from(mark.chunk, mark.position)
            .map(|(location, record)| (location, record_hash(record)))
            .collect();
        for (location, hash) in later {
            self.unindex(location, hash);
        }
        let keep = (mark.chunk + 1).saturating_sub(self.first_chunk) as usize;
        self.chunks.truncate(keep.max(1));
        if let Some(chunk) = self
            .chunks
            .get_mut((mark.chunk - self.first_chunk) as usize)
        {
            if chunk.len() > mark.position {
                // Copied first if a snapshot being written holds it.
                Arc::make_mut(chunk).truncate(mark.position);
            }
        }
        self.count = mark.count;
    }
}

/// The records of a dedup table as they were when [`Dedup::frozen`] took them: what a
/// snapshot encodes, read while apply goes on (it shares the chunks, which the table then
/// leaves as they are). Serialized exactly as the table was.
pub(crate) struct FrozenRecords {
    chunks: Vec<Arc<Vec<u8>>>,
    head: usize,
    count: usize,
}

impl Dedup {
    /// The records as they are now, without copying them (see [`FrozenRecords`]).
    pub fn frozen(&self) -> FrozenRecords {
        FrozenRecords {
            chunks: self.chunks.iter().cloned().collect(),
            head: self.head,
            count: self.count,
        }
    }
}

/// The records in `chunks` from byte `position` of the first one on, oldest first, each with
/// the index of its chunk among `chunks` and its position in that chunk.
fn records_in<'a>(
    chunks: impl Iterator<Item = &'a Arc<Vec<u8>>>,
    position: usize,
) -> impl Iterator<Item = (usize, usize, &'a [u8])> {
    chunks.enumerate().flat_map(move |(n, chunk)| {
        let mut at = if n == 0 { position } else { 0 };
        std::iter::from_fn(move || {
            (at < chunk.len()).then(|| {
                let (start, len) = record_span(chunk, at);
                let record = (n, at, &chunk[start..start + len]);
                at = start + len;
                record
            })
        })
    })
}

/// Serialized as the list of records, oldest first: canonical for the same log.
impl Serialize for Dedup {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.frozen().serialize(serializer)
    }
}

impl Serialize for FrozenRecords {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.count))?;
        for (_, _, record) in records_in(self.chunks.iter(), self.head) {
            seq.serialize_element(&Bytes(record))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Dedup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Record(Vec<u8>);
        impl<'de> Deserialize<'de> for Record {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct BytesVisitor;
                impl Visitor<'_> for BytesVisitor {
                    type Value = Record;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a dedup record")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Record, E> {
                        check_record(bytes).map_err(E::custom)?;
                        Ok(Record(bytes.to_vec()))
                    }
                    fn visit_byte_buf<E: serde::de::Error>(
                        self,
                        bytes: Vec<u8>,
                    ) -> Result<Record, E> {
                        check_record(&bytes).map_err(E::custom)?;
                        Ok(Record(bytes))
                    }
                }
                deserializer.deserialize_byte_buf(BytesVisitor)
            }
        }
        struct RecordsVisitor;
        impl<'de> Visitor<'de> for RecordsVisitor {
            type Value = Dedup;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of dedup records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dedup, A::Error> {
                let mut dedup = Dedup::default();
                while let Some(Record(record)) = seq.next_element()? {
                    let hash = record_hash(&record);
                    let (ordinal, id) = record_key(&record);
                    if dedup
                        .index
                        .find(hash, |slot| {
                            record_is(dedup.record(slot.location()), ordinal, id)
                        })
                        .is_some()
                    {
                        return Err(serde::de::Error::custom(
                            "an event id is remembered twice for one account",
                        ));
                    }
                    dedup.push_record(&record, hash);
                }
                Ok(dedup)
            }
        }
        deserializer.deserialize_seq(RecordsVisitor)
    }
}

fn settled_at(record: &[u8]) -> u64 {
    u64::from_le_bytes(record[4..12].try_into().expect("8 bytes"))
}

fn record_key(record: &[u8]) -> (u32, &[u8]) {
    let ordinal = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
    let len = record[ID_LEN_AT] as usize;
    (ordinal, &record[ID_LEN_AT + 1..ID_LEN_AT + 1 + len])
}

fn record_is(record: &[u8], ordinal: u32, id: &[u8]) -> bool {
    record_key(record) == (ordinal, id)
}

fn record_hash(record: &[u8]) -> u64 {
    let (ordinal, id) = record_key(record);
    key_hash(ordinal, id)
}

/// The index hash of a key: [`spread`] of 32 bits folded from a 64-bit hash of it.
fn key_hash(ordinal: u32, id: &[u8]) -> u64 {
    let full = crate::table::hash_bytes(ordinal, id);
    spread((full ^ full >> 32) as u32)
}

fn put_varint(buf: &mut Vec<u8>, value: u128) {
    // Most numbers here (the record length, book, version, grant index) take one byte.
    if value < 0x80 {
        buf.push(value as u8);
        return;
    }
    match u64::try_from(value) {
        Ok(mut small) => {
            while small >= 0x80 {
                buf.push(small as u8 | 0x80);
                small >>= 7;
            }
            buf.push(small as u8);
        }
        Err(_) => {
            let mut large = value;
            while large >= 0x80 {
                buf.push(large as u8 | 0x80);
                large >>= 7;
            }
            buf.push(large as u8);
        }
    }
}

/// An amount as one byte of sign and scale, then its mantissa as a varint; trailing zeros are
/// dropped first, so the form is canonical (like the compact form of `Amount`'s `Serialize`,
/// which has the same head byte and then the mantissa's bytes instead of a varint).
fn put_amount(buf: &mut Vec<u8>, amount: Amount) {
    let (scale, negative, mantissa) = amount.canonical_parts();
    buf.push((scale as u8) << 1 | negative as u8);
    put_varint(buf, mantissa);
}

/// Reads a record written by [`Dedup::insert`] (checked when it was decoded or written).
fn decode(record: &[u8]) -> Remembered {
    parse(record).expect("records are checked")
}

/// Checks that a decoded record is well formed, so reading it later cannot fail.
fn check_record(record: &[u8]) -> Result<(), &'static str> {
    parse(record).map(|_| ())
}

fn parse(record: &[u8]) -> Result<Remembered, &'static str> {
    if record.len() <= ID_LEN_AT {
        return Err("dedup record too short");
    }
    let len = record[ID_LEN_AT] as usize;
    if len == 0 || record.len() < ID_LEN_AT + 1 + len {
        return Err("dedup record: bad event id length");
    }
    let mut reader = Reader {
        bytes: record,
        at: ID_LEN_AT + 1 + len,
    };
    let flags = reader.byte()?;
    if flags >> 7 != 0 {
        return Err("dedup record: unknown flags");
    }
    let mut amounts = [Amount::ZERO; 6];
    for (bit, amount) in amounts.iter_mut().enumerate() {
        if flags & (1 << bit) != 0 {
            *amount = reader_amount(&mut reader)?;
        }
    }
    let [charged, balance_after, debt_created, from_hold, revenue, cost] = amounts;
    let price_book = reader.varint_u32()?;
    let price_version = reader.varint_u32()?;
    let draws = if flags & ONE_DRAW_OF_CHARGE != 0 {
        vec![(reader.varint_u32()?, charged)]
    } else {
        let count = reader.varint_u32()?;
        let mut draws = Vec::new();
        for _ in 0..count {
            let grant = reader.varint_u32()?;
            draws.push((grant, reader_amount(&mut reader)?));
        }
        draws
    };
    if reader.at != record.len() {
        return Err("dedup record: trailing bytes");
    }
    Ok(Remembered {
        fingerprint: u64::from_le_bytes(record[12..20].try_into().expect("8 bytes")),
        settled_at: settled_at(record),
        charged,
        balance_after,
        debt_created,
        from_hold,
        revenue,
        cost,
        price_book,
        price_version,
        draws,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let byte = *self.bytes.get(self.at).ok_or("dedup record truncated")?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u128, &'static str> {
        let mut value: u128 = 0;
        for shift in (0..128).step_by(7) {
            let byte = self.byte()?;
            value |= ((byte & 0x7f) as u128) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("dedup record: varint too long")
    }

    fn varint_u32(&mut self) -> Result<u32, &'static str> {
        u32::try_from(self.varint()?).map_err(|_| "dedup record: number out of range")
    }
}

fn reader_amount(reader: &mut Reader<'_>) -> Result<Amount, &'static str> {
    let head = reader.byte()?;
    let scale = (head >> 1) as u32;
    let mantissa = reader.varint()?;
    if scale > 28 || mantissa >> 96 != 0 {
        return Err("dedup record: amount out of range");
    }
    let mut decimal = Decimal::from_i128_with_scale(mantissa as i128, scale);
    decimal.set_sign_negative(head & 1 == 1);
    Ok(Amount::from_decimal_raw(decimal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> Amount {
        Amount::parse("t", text).unwrap()
    }

    fn remembered(seed: u64) -> Remembered {
        Remembered {
            fingerprint: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            settled_at: 1_700_000_000_000 + seed,
            charged: Amount::from_decimal_raw(Decimal::new(4000, 6)),
            balance_after: a("-999999999999.123456789"),
            debt_created: Amount::ZERO,
            from_hold: a("0.5"),
            revenue: a("79228162514264.337593543950335"),
            cost: -a("0.0000001"),
            price_book: seed as u32,
            price_version: u32::MAX,
            draws: vec![(0, a("1.25")), (7, a("3"))],
        }
    }

    #[test]
    fn records_round_trip_and_expire_in_order() {
        let mut dedup = Dedup::default();
        for seed in 0..50u64 {
            let r = remembered(seed);
            dedup.insert(
                (seed % 3) as u32,
                &format!("ev-{seed}"),
                &r,
                r.draws.iter().copied(),
            );
        }
        assert_eq!(dedup.get(1, "ev-4"), Some(remembered(4)));
        assert_eq!(dedup.get(1, "ev-4").unwrap().charged.decimal().scale(), 3);
        assert_eq!(dedup.get(0, "ev-4"), None);
        let bytes = bincode::serialize(&dedup).unwrap();
        let decoded: Dedup = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, dedup);
        assert_eq!(decoded.get(2, "ev-47"), Some(remembered(47)));
        dedup.forget_while(|at| at < 1_700_000_000_000 + 10);
        assert_eq!(dedup.len(), 40);
        assert_eq!(dedup.get(0, "ev-9"), None);
        assert_eq!(dedup.get(1, "ev-10"), Some(remembered(10)));
        let mark = dedup.mark();
        for seed in 50..60u64 {
            let r = remembered(seed);
            dedup.insert(0, &format!("ev-{seed}"), &r, r.draws.iter().copied());
        }
        assert_eq!(dedup.get(0, "ev-53"), Some(remembered(53)));
        assert_eq!(dedup.len(), 50);
        dedup.rollback(mark);
        assert_eq!(dedup.len(), 40);
        assert_eq!(dedup.get(0, "ev-53"), None);
        assert_eq!(dedup.get(2, "ev-14"), Some(remembered(14)));
        let r = remembered(53);
        dedup.insert(0, "ev-53", &r, r.draws.iter().copied());
        assert_eq!(dedup.get(0, "ev-53"), Some(remembered(53)));
        dedup.forget_while(|_| true);
        assert_eq!(dedup.len(), 0);
        assert_eq!(dedup.get(0, "ev-53"), None);
        assert_eq!(dedup, Dedup::default());
    }

    /// Many records span several chunks; forgetting frees whole chunks, a rollback may cross
    /// a chunk boundary, and the encoding is the list of records whatever the chunking.
    #[test]
    fn records_span_chunks() {
        let mut dedup = Dedup::default();
        let mut other = Dedup::default();
        for seed in 0..5_000u64 {
            let r = remembered(seed);
            dedup.insert(7, &format!("event-{seed}"), &r, r.draws.iter().copied());
        }
        assert!(dedup.chunks.len() > 3);
        dedup.forget_while(|at| at < 1_700_000_000_000 + 2_000);
        for seed in 2_000..4_000u64 {
            let r = remembered(seed);
            other.insert(7, &format!("event-{seed}"), &r, r.draws.iter().copied());
        }
        let mark = other.mark();
        for seed in 4_000..5_000u64 {
            let r = remembered(seed);
            other.insert(7, &format!("event-{seed}"), &r, r.draws.iter().copied());
        }
        assert_eq!(dedup, other);
        let chunks_before = other.chunks.len();
        for seed in 5_000..7_000u64 {
            let r = remembered(seed);
            other.insert(7, &format!("event-{seed}"), &r, r.draws.iter().copied());
        }
        assert!(other.chunks.len() > chunks_before);
        other.rollback(mark);
        assert_eq!(other.len(), 2_000);
        assert_eq!(other.get(7, "event-4000"), None);
        assert_eq!(other.get(7, "event-6999"), None);
        assert_eq!(other.get(7, "event-3999"), Some(remembered(3_999)));
        assert!(dedup.chunks.len() < 5_000 * 60 / CHUNK + 2);
        let decoded: Dedup = bincode::deserialize(&bincode::serialize(&dedup).unwrap()).unwrap();
        assert_eq!(decoded, dedup);
        assert_eq!(decoded.get(7, "event-2000"), Some(remembered(2_000)));
        assert_eq!(decoded.get(7, "event-1999"), None);
        assert_eq!(
            bincode::serialize(&decoded).unwrap(),
            bincode::serialize(&dedup).unwrap()
        );
    }

    /// The index keeps each record's hash beside its location and rehashes from it alone:
    /// after it has grown many times and been tidied (forgetting leaves tombstones that a later
    /// insert clears by rehashing in place), every remembered id is found and no forgotten one.
    #[test]
    fn the_index_finds_every_record_after_growth_and_forgetting() {
        let mut dedup = Dedup::default();
        let key = |seed: u64| ((seed % 97) as u32, format!("evt-{seed:06}"));
        let insert = |dedup: &mut Dedup, seed: u64| {
            let r = remembered(seed);
            let (ordinal, id) = key(seed);
            dedup.insert(ordinal, &id, &r, r.draws.iter().copied());
        };
        for seed in 0..30_000 {
            insert(&mut dedup, seed);
        }
        dedup.forget_while(|at| at < 1_700_000_000_000 + 12_000);
        for seed in 30_000..45_000 {
            insert(&mut dedup, seed);
        }
        assert_eq!(dedup.len(), 33_000);
        assert_eq!(dedup.index.len(), dedup.len());
        for slot in dedup.index.iter() {
            let (ordinal, id) = record_key(dedup.record(slot.location()));
            assert_eq!(slot.hash(), key_hash(ordinal, id));
        }
        for seed in 0..45_000 {
            let (ordinal, id) = key(seed);
            let found = dedup.get(ordinal, &id);
            if seed < 12_000 {
                assert_eq!(found, None, "seed {seed} was forgotten");
                assert!(!dedup.contains(ordinal, &id));
            } else {
                assert_eq!(found, Some(remembered(seed)), "seed {seed}");
                // The same id under another account is another key.
                assert!(!dedup.contains(ordinal + 1, &id));
            }
        }
    }

    /// Growing the index moves one table's slots, not every remembered id's: the ids spread
    /// evenly over the tables (the fullest holds less than twice the mean), so no settlement
    /// waits for more than about 2/4,096 of the index to be rehashed.
    #[test]
    fn a_growing_index_moves_a_small_share_of_it() {
        let mut dedup = Dedup::default();
        let r = remembered(1);
        let count = 800_000;
        for seed in 0..count {
            let id = format!("bench-evt-{seed:012}");
            dedup.insert((seed % 10_000) as u32, &id, &r, std::iter::empty());
        }
        let mean = count as usize / SHARDS;
        let fullest = dedup.index.shards.iter().map(|t| t.len()).max().unwrap();
        let emptiest = dedup.index.shards.iter().map(|t| t.len()).min().unwrap();
        assert!(fullest < 2 * mean, "fullest table {fullest}, mean {mean}");
        assert!(
            emptiest > mean / 2,
            "emptiest table {emptiest}, mean {mean}"
        );
        assert_eq!(dedup.index.len(), count as usize);
        assert!(dedup.contains(7, "bench-evt-000000010007"));
    }

    /// Prints the longest single inserts while the index grows to 4 million ids (a
    /// measurement, not a check: `cargo test --release -p tally-core --lib
    /// longest_inserts -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn longest_inserts() {
        let mut dedup = Dedup::default();
        let r = remembered(1);
        let mut longest = Vec::new();
        for seed in 0..4_000_000u64 {
            let id = format!("bench-evt-{seed:012}");
            let started = std::time::Instant::now();
            dedup.insert((seed % 10_000) as u32, &id, &r, std::iter::empty());
            longest.push((started.elapsed(), seed));
            if longest.len() > 64 {
                longest.sort_unstable_by(|a, b| b.cmp(a));
                longest.truncate(8);
            }
        }
        longest.sort_unstable_by(|a, b| b.cmp(a));
        for (took, seed) in longest.iter().take(8) {
            eprintln!("insert {seed}: {took:?}");
        }
    }

    /// Zero amounts and a single draw of the whole charge are left out of the bytes and come
    /// back as they were (by value: amounts come back without trailing zeros).
    #[test]
    fn short_forms_round_trip() {
        let mut dedup = Dedup::default();
        let charge = Amount::from_decimal_raw(Decimal::new(4000, 6));
        let cases = [
            (vec![(1, a("0.004"))], Amount::ZERO),
            (vec![(0, a("0.003"))], a("0.001")),
            (vec![(0, a("0.001")), (1, a("0.003"))], Amount::ZERO),
            (Vec::new(), charge),
        ];
        for (index, (draws, debt)) in cases.into_iter().enumerate() {
            let r = Remembered {
                fingerprint: 7,
                settled_at: 9,
                charged: charge,
                balance_after: Amount::ZERO,
                debt_created: debt,
                from_hold: Amount::ZERO,
                revenue: a("0.00008"),
                cost: Amount::ZERO,
                price_book: 0,
                price_version: 0,
                draws,
            };
            let id = format!("e{index}");
            dedup.insert(3, &id, &r, r.draws.iter().copied());
            assert_eq!(dedup.get(3, &id), Some(r), "case {index}");
        }
        let single = dedup.record(
            dedup
                .index
                .find(key_hash(3, b"e0"), |_| true)
                .unwrap()
                .location(),
        );
        // Id length and id, flags, charged and revenue (a byte of scale and sign, a byte of
        // mantissa each), book and version, the one draw's grant index.
        assert_eq!(single.len(), ID_LEN_AT + (1 + 2) + 1 + (2 + 2) + 2 + 1);
        let decoded: Dedup = bincode::deserialize(&bincode::serialize(&dedup).unwrap()).unwrap();
        assert_eq!(decoded, dedup);
    }

    #[test]
    fn corrupt_records_are_refused() {
        let mut dedup = Dedup::default();
        let r = remembered(1);
        dedup.insert(1, "x", &r, r.draws.iter().copied());
        let mut bytes = bincode::serialize(&dedup).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = 0x80; // a varint that never ends
        assert!(bincode::deserialize::<Dedup>(&bytes).is_err());
        let r = remembered(2);
        dedup.insert(1, "x", &r, r.draws.iter().copied()); // a repeated id: decoding refuses it
        let bytes = bincode::serialize(&dedup).unwrap();
        assert!(bincode::deserialize::<Dedup>(&bytes).is_err());
    }
}
