//! Release benchmark of the wire conversions on the usage path (not a test).
//!
//! `cargo run --release -p tally-proto --example convert_bench [-- BATCHES]`
//!
//! Builds BATCHES (default 100) `RecordUsageBatchRequest`s of 8,190 events shaped like
//! tally-bench's workload, then times, per event: prost decoding of the encoded request,
//! `to_command` (request -> core command), the two in one step from the request's bytes
//! (`ingest`), and `record_usage_batch_reply` (core outcomes ->
//! reply) for settlements shaped like the ones the workload produces. For instruction counts
//! run it under callgrind with one of the measured parts toggled on, e.g.
//! `valgrind --tool=callgrind --toggle-collect='*convert_requests*' target/release/examples/convert_bench 5`
//! (the parts: `decode_requests`, `convert_requests`, `convert_outcomes`, and `read_wire`: what
//! tally-server does instead of the first two, `ingest::RecordUsageBatchWire`).

use prost::Message;
use std::time::Instant;
use tally_core::{AccountId, Amount, BookId, Draw, EventId, GrantId, Outcome, Settlement};
use tally_proto::convert::record_usage_batch_reply;
use tally_proto::ingest::RecordUsageBatchWire;
use tally_proto::{v1, ToCommand};

/// tallyd's allocator, so allocation costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 8_190;

/// xorshift64*: every run converts the same values.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn request(rng: &mut Rng, batch: usize) -> v1::RecordUsageBatchRequest {
    let pair = |key: &str, value: &str| v1::KeyValue {
        key: key.to_string(),
        value: value.to_string(),
    };
    v1::RecordUsageBatchRequest {
        events: (0..EVENTS)
            .map(|i| {
                let r = rng.next();
                v1::UsageEvent {
                    event_id: format!("run1-3-{}", batch * EVENTS + i),
                    account: format!("acct-{:07}", r % 10_000),
                    meter: "tokens".to_string(),
                    quantity: ((r >> 20) % 1_000 + 1).to_string(),
                    dimensions: vec![pair("model", "large"), pair("region", "eu")],
                    occurred_at_ms: 1_790_000_000_000 + batch as u64,
                    cost: None,
                    hold_id: None,
                }
            })
            .collect(),
        atomic: false,
        ..Default::default()
    }
}

/// Settlements shaped like the workload's: a charge at scale 4 drawn from one grant, revenue
/// and cost at the reporting scale.
fn outcome(rng: &mut Rng, batch: usize) -> Outcome {
    let grant = GrantId::new("allowance").unwrap();
    let book = BookId::new("bench-book").unwrap();
    Outcome::Batch(
        (0..EVENTS)
            .map(|i| {
                let r = rng.next();
                let charged = decimal(r % 20_000 + 1, 4);
                let revenue = decimal(r % 900_000, 8);
                let cost = decimal((r >> 30) % 10_000, 6);
                Outcome::Settled(Settlement {
                    event_id: EventId::new(format!("run1-3-{}", batch * EVENTS + i)).unwrap(),
                    account: AccountId::new(format!("acct-{:07}", r % 10_000)).unwrap(),
                    charged,
                    balance_after: decimal(19_999_000_000 - (r >> 12) % 100_000_000, 4),
                    drawdown: vec![Draw {
                        grant: grant.clone(),
                        amount: charged,
                    }],
                    debt_created: Amount::ZERO,
                    from_hold: Amount::ZERO,
                    revenue,
                    cost,
                    margin: revenue.checked_sub(cost).unwrap(),
                    price_book: Some(book.clone()),
                    price_version: 1,
                    settled_at: 1_790_000_000_000 + batch as u64,
                })
            })
            .collect(),
    )
}

/// `mantissa / 10^scale`, built from text (setup only).
fn decimal(mantissa: u64, scale: u32) -> Amount {
    let digits = format!("{mantissa:0>width$}", width = scale as usize + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale as usize);
    Amount::parse("bench", &format!("{whole}.{fraction}0")).unwrap()
}

#[inline(never)]
fn decode_requests(encoded: &[Vec<u8>]) -> Vec<v1::RecordUsageBatchRequest> {
    encoded
        .iter()
        .map(|bytes| v1::RecordUsageBatchRequest::decode(bytes.as_slice()).unwrap())
        .collect()
}

#[inline(never)]
fn convert_requests(requests: &[v1::RecordUsageBatchRequest]) -> usize {
    let mut events = 0;
    for request in requests {
        match request.to_command().unwrap() {
            tally_core::Command::UsageBatch { events: list, .. } => events += list.len(),
            other => panic!("unexpected {}", other.name()),
        }
    }
    events
}

/// What tally-server does with a batch: keep its bytes, read them straight into core events.
#[inline(never)]
fn read_wire(encoded: &[Vec<u8>]) -> usize {
    let mut events = 0;
    for bytes in encoded {
        let wire = RecordUsageBatchWire::decode(bytes.as_slice()).unwrap();
        match wire.to_command().unwrap() {
            tally_core::Command::UsageBatch { events: list, .. } => events += list.len(),
            other => panic!("unexpected {}", other.name()),
        }
    }
    events
}

#[inline(never)]
fn convert_outcomes(outcomes: &[Outcome]) -> usize {
    let mut bytes = 0;
    for outcome in outcomes {
        let reply = record_usage_batch_reply(
            outcome,
            EVENTS,
            v1::BatchReply::EveryResult as i32,
            v1::WriteInfo::default(),
        )
        .expect("the sums fit");
        bytes += reply.results.len();
        std::hint::black_box(&reply);
    }
    bytes
}

fn main() {
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let encoded: Vec<Vec<u8>> = (0..batches)
        .map(|b| request(&mut rng, b).encode_to_vec())
        .collect();
    let outcomes: Vec<Outcome> = (0..batches).map(|b| outcome(&mut rng, b)).collect();
    let events = (batches * EVENTS) as f64;

    let started = Instant::now();
    let requests = decode_requests(&encoded);
    let decode = started.elapsed();
    let started = Instant::now();
    let converted = convert_requests(&requests);
    let to_command = started.elapsed();
    let started = Instant::now();
    let read = read_wire(&encoded);
    let wire = started.elapsed();
    assert_eq!(read, batches * EVENTS);
    let started = Instant::now();
    let replied = convert_outcomes(&outcomes);
    let to_reply = started.elapsed();
    assert_eq!(converted, batches * EVENTS);
    assert_eq!(replied, batches * EVENTS);
    let per_event = |d: std::time::Duration| d.as_secs_f64() * 1e9 / events;
    println!("events                        {}", batches * EVENTS);
    println!(
        "prost decode                  {:.0} ns/event",
        per_event(decode)
    );
    println!(
        "request -> command            {:.0} ns/event",
        per_event(to_command)
    );
    println!(
        "bytes -> command (ingest)     {:.0} ns/event",
        per_event(wire)
    );
    println!(
        "outcome -> reply              {:.0} ns/event",
        per_event(to_reply)
    );
}
