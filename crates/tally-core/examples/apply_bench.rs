//! Release benchmark of `LedgerState::apply` on one core (not a test).
//!
//! `cargo run --release -p tally-core --example apply_bench [-- ACCOUNTS EVENTS [PER [BATCH]]]`
//!
//! 10,000 accounts each with a monthly allowance and a purchased grant, a per_unit price matched
//! on two dimensions (quoted per PER units, default 1; tally-bench quotes per 1000 tokens, which
//! divides every charge; the charges are the same either way), usage events on uniformly random
//! accounts in entries of BATCH events (default 1,000; one `UsageBatch` command each). Prints settled events
//! per second, bytes of state per account and per remembered event id (measured with a
//! counting allocator), the bytes of the entries as the log encodes them, and how long a
//! ledger-wide report takes to read.
//!
//! Instructions per event, deterministic under load: `valgrind --tool=callgrind
//! --toggle-collect='*apply_all*' target/release/examples/apply_bench 10000 100000`, and
//! `'*encode_entries*'` for the log encoding.

#![allow(unsafe_code)] // The counting allocator below is the only unsafe code, and only here.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tally_core::*;

struct Counting;
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn amount(text: &str) -> Amount {
    Amount::parse("bench", text).unwrap()
}

/// xorshift64*: a deterministic generator, so every run benchmarks the same workload.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let accounts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let total_events: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let per = amount(args.get(3).map_or("1", String::as_str));
    let batch: usize = args
        .get(4)
        .and_then(|a| a.parse().ok())
        .filter(|b| (1..=8_190).contains(b))
        .unwrap_or(1_000);
    let start_ms = parse_utc("2026-03-02T00:00:00Z").unwrap();

    let base_bytes = live();
    let mut state = LedgerState::new();
    let mut setup = vec![
        Command::Init(LedgerConfig {
            reporting_currency: AssetCode::new("USD").unwrap(),
            reporting_scale: 6,
            dedup_window_ms: DEDUP_WINDOW_MS_DEFAULT,
        }),
        Command::PublishPrices(PriceBookVersionSpec {
            book: BookId::new("llm").unwrap(),
            asset: AssetCode::new("USD").unwrap(),
            effective_from: None,
            rates: ["small", "large"]
                .iter()
                .flat_map(|model| {
                    ["us", "eu"].iter().map(move |region| Rate {
                        meter: Meter::new("tokens").unwrap(),
                        dimensions: vec![
                            (Key::new("model").unwrap(), model.to_string()),
                            (Key::new("region").unwrap(), region.to_string()),
                        ],
                        model: RateModel::PerUnit {
                            unit_price: amount(if *model == "small" {
                                "0.000002"
                            } else {
                                "0.00001"
                            })
                            .checked_mul(per)
                            .unwrap(),
                            per,
                        },
                    })
                })
                .collect(),
        }),
    ];
    for index in 0..accounts {
        let account = AccountId::new(format!("customer-{index:07}")).unwrap();
        setup.push(Command::CreateAccount(AccountSpec {
            id: account.clone(),
            asset: AssetCode::new("USD").unwrap(),
            price_book: Some(BookId::new("llm").unwrap()),
            credit_limit: None,
            list_price: None,
            metadata: Vec::new(),
            thresholds: Vec::new(),
            auto_recharge: None,
        }));
        setup.push(Command::AddGrant(GrantSpec {
            account: account.clone(),
            id: GrantId::new("plan").unwrap(),
            category: GrantCategory::Allowance,
            amount: amount("1000"),
            priority: None,
            starts_at: None,
            expires_at: None,
            reset_every: Some(ResetPeriod::Month),
            rollover_max: None,
            paid: Some(amount("20")),
        }));
        setup.push(Command::AddGrant(GrantSpec {
            account,
            id: GrantId::new("topup").unwrap(),
            category: GrantCategory::Purchased,
            amount: amount("1000000"),
            priority: None,
            starts_at: None,
            expires_at: None,
            reset_every: None,
            rollover_max: None,
            paid: Some(amount("1000000")),
        }));
    }
    let result = state.apply(&Entry {
        at_ms: start_ms,
        commands: setup,
    });
    assert!(result
        .outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Applied(_))));
    drop(result);
    let state_bytes_accounts = live() - base_bytes;
    let rss_accounts_kib = rss_kib();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let account_ids: Vec<AccountId> = (0..accounts)
        .map(|i| AccountId::new(format!("customer-{i:07}")).unwrap())
        .collect();
    let meter = Meter::new("tokens").unwrap();
    let models = ["small", "large"];
    let regions = ["us", "eu"];
    let mut entries = Vec::with_capacity(total_events / batch);
    for entry_index in 0..total_events / batch {
        let at_ms = start_ms + entry_index as u64;
        let events = (0..batch)
            .map(|i| {
                let r = rng.next();
                UsageEvent {
                    event_id: EventId::new(format!("ev-{entry_index}-{i}")).unwrap(),
                    account: account_ids[(r % accounts as u64) as usize].clone(),
                    meter: meter.clone(),
                    quantity: Amount::from_i64((r >> 20) as i64 % 5_000 + 1),
                    // Shared as a node's decoder shares them.
                    dimensions: Dimensions::shared(
                        &[
                            ("model", models[(r >> 8) as usize % 2]),
                            ("region", regions[(r >> 9) as usize % 2]),
                        ],
                        |key| Key::new(key),
                    )
                    .unwrap(),
                    occurred_at: at_ms,
                    cost: None,
                    hold: None,
                }
            })
            .collect();
        entries.push(Entry {
            at_ms,
            commands: vec![Command::UsageBatch {
                events,
                atomic: false,
            }],
        });
    }

    let log_bytes = encode_entries(&entries);
    let before_events = live();
    let inputs_bytes = before_events;
    let started = Instant::now();
    let (settled, journal_entries) = apply_all(&mut state, &entries);
    let elapsed = started.elapsed();
    let after_events = live();
    drop(entries);
    let state_bytes_total = live() - base_bytes - (inputs_bytes - before_events);
    let remembered = state.remembered_event_count();
    let per_event = (after_events - before_events) as f64 / remembered.max(1) as f64;
    let hash_started = Instant::now();
    let hash = state.state_hash_hex();
    let hash_elapsed = hash_started.elapsed();
    let report_started = Instant::now();
    let report = state
        .report(None, None)
        .expect("a ledger-wide report always exists");
    let report_elapsed = report_started.elapsed();
    let encode_started = Instant::now();
    let snapshot = state.encode_snapshot();
    let encode_elapsed = encode_started.elapsed();

    println!("accounts                      {accounts}");
    println!(
        "events applied                {}",
        entries_len(total_events, batch)
    );
    println!("events settled                {settled}");
    println!("journal entries               {journal_entries}");
    println!(
        "apply time                    {:.3} s",
        elapsed.as_secs_f64()
    );
    println!(
        "settled events per second     {:.0}",
        settled as f64 / elapsed.as_secs_f64()
    );
    println!(
        "state bytes per account       {:.0} (2 grants each, before usage)",
        state_bytes_accounts as f64 / accounts as f64
    );
    println!("resident memory after setup   {rss_accounts_kib} KiB");
    println!("state bytes per remembered id {per_event:.0} (dedup record + per-event growth)");
    println!("state bytes total             {state_bytes_total}");
    println!(
        "state bytes per account, all  {:.0} (after the events, dedup records included)",
        state_bytes_total as f64 / accounts as f64
    );
    println!("resident memory (VmRSS)       {} KiB", rss_kib());
    println!(
        "snapshot bytes                {} (encoded in {:.0} ms)",
        snapshot.len(),
        encode_elapsed.as_secs_f64() * 1e3
    );
    println!("log entry bytes (bincode)     {log_bytes}");
    println!(
        "ledger-wide report            {} events, revenue {} ({:.3} ms)",
        report.events,
        report.revenue,
        report_elapsed.as_secs_f64() * 1e3
    );
    println!(
        "state hash                    {hash} ({:.0} ms)",
        hash_elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(
        settled,
        entries_len(total_events, batch),
        "every event should settle"
    );
}

/// The measured part, out of line so that `valgrind --tool=callgrind
/// --toggle-collect='*apply_all*'` counts the instructions of applying the events alone.
/// Returns (events settled, journal entries).
#[inline(never)]
fn apply_all(state: &mut LedgerState, entries: &[Entry]) -> (usize, usize) {
    let mut settled = 0usize;
    let mut journal_entries = 0usize;
    for entry in entries {
        let result = state.apply(entry);
        journal_entries += result.journal.len();
        for outcome in &result.outcomes {
            if let Outcome::Batch(list) = outcome {
                settled += list
                    .iter()
                    .filter(|o| matches!(o, Outcome::Settled(_)))
                    .count();
            }
        }
    }
    (settled, journal_entries)
}

/// Encodes every entry as the log does (bincode, varint integers; amounts in their compact
/// canonical form), out of line for `--toggle-collect='*encode_entries*'`. Returns the bytes.
#[inline(never)]
fn encode_entries(entries: &[Entry]) -> usize {
    use bincode::Options;
    let options = bincode::DefaultOptions::new();
    entries
        .iter()
        .map(|entry| options.serialize(entry).expect("encodable").len())
        .sum()
}

/// This process's resident memory, from /proc (0 where there is none).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn entries_len(total: usize, batch: usize) -> usize {
    total / batch * batch
}
