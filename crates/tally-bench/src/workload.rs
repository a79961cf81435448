//! The standard debit workload: what every account holds, what is priced and how, and the usage
//! events sent (uniformly random accounts, unique event ids). Amounts are decimal strings, as on
//! the wire; nothing here is a float.

use prost::encoding::encode_varint;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tally_proto::ingest::RecordUsageBatchWire;
use tally_proto::v1;

/// The asset balances are held in, and its scale.
pub const ASSET: &str = "CREDITS";
pub const ASSET_SCALE: u32 = 4;
/// Reporting currency per credit, for revenue on debt (there is none in this workload).
pub const LIST_PRICE: &str = "0.0001";
pub const PRICE_BOOK: &str = "bench-book";
pub const METER: &str = "tokens";
/// The two dimensions every event carries and the most specific rate matches.
pub const DIMENSIONS: [(&str, &str); 2] = [("model", "large"), ("region", "eu")];
/// Credits per 1,000 tokens for `model=large, region=eu` (the rate every event matches).
pub const UNIT_PRICE: &str = "2";
pub const PRICE_PER: &str = "1000";
/// The less specific rates the matcher has to rule out.
pub const MODEL_ONLY_UNIT_PRICE: &str = "3";
pub const FALLBACK_UNIT_PRICE: &str = "5";
/// Operator cost in the reporting currency per 1,000 tokens (the ledger-wide cost book).
pub const COST_UNIT_PRICE: &str = "0.01";

/// Every account gets a monthly allowance and a purchased top-up; together they cover far more
/// than any run spends (an event costs at most 2 credits), so a rejection means a bug.
pub const ALLOWANCE_GRANT: &str = "allowance";
pub const ALLOWANCE_AMOUNT: &str = "1000000";
pub const ALLOWANCE_PAID: &str = "50";
pub const PURCHASED_GRANT: &str = "purchased";
pub const PURCHASED_AMOUNT: &str = "1000000";
pub const PURCHASED_PAID: &str = "100";

/// Quantities are uniform in 1..=QUANTITY_MAX tokens.
pub const QUANTITY_MAX: u32 = 1_000;

pub fn account_id(prefix: &str, index: u32) -> String {
    format!("{prefix}-{index:07}")
}

pub fn account_ids(prefix: &str, accounts: u32) -> Arc<Vec<String>> {
    Arc::new(
        (0..accounts)
            .map(|index| account_id(prefix, index))
            .collect(),
    )
}

fn key_value(key: &str, value: &str) -> v1::KeyValue {
    v1::KeyValue {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn per_unit(unit_price: &str, per: &str) -> Option<v1::rate::Model> {
    Some(v1::rate::Model::PerUnit(v1::PerUnit {
        unit_price: unit_price.to_string(),
        per: per.to_string(),
    }))
}

pub fn price_book() -> v1::PublishPricesRequest {
    let (model, region) = (DIMENSIONS[0], DIMENSIONS[1]);
    v1::PublishPricesRequest {
        book: PRICE_BOOK.to_string(),
        asset: ASSET.to_string(),
        effective_from_ms: None,
        rates: vec![
            v1::Rate {
                meter: METER.to_string(),
                dimensions: vec![],
                model: per_unit(FALLBACK_UNIT_PRICE, PRICE_PER),
            },
            v1::Rate {
                meter: METER.to_string(),
                dimensions: vec![key_value(model.0, model.1)],
                model: per_unit(MODEL_ONLY_UNIT_PRICE, PRICE_PER),
            },
            v1::Rate {
                meter: METER.to_string(),
                dimensions: vec![key_value(model.0, model.1), key_value(region.0, region.1)],
                model: per_unit(UNIT_PRICE, PRICE_PER),
            },
        ],
    }
}

pub fn cost_book() -> v1::PublishCostsRequest {
    v1::PublishCostsRequest {
        effective_from_ms: None,
        rates: vec![v1::Rate {
            meter: METER.to_string(),
            dimensions: vec![],
            model: per_unit(COST_UNIT_PRICE, PRICE_PER),
        }],
    }
}

pub fn create_account(id: &str) -> v1::CreateAccountRequest {
    v1::CreateAccountRequest {
        id: id.to_string(),
        asset: ASSET.to_string(),
        price_book: Some(PRICE_BOOK.to_string()),
        credit_limit: None,
        list_price: Some(LIST_PRICE.to_string()),
        metadata: vec![],
        thresholds: vec![],
        auto_recharge: None,
    }
}

pub fn allowance(account: &str) -> v1::AddGrantRequest {
    v1::AddGrantRequest {
        account: account.to_string(),
        grant_id: ALLOWANCE_GRANT.to_string(),
        category: v1::GrantCategory::Allowance as i32,
        amount: ALLOWANCE_AMOUNT.to_string(),
        priority: None,
        starts_at_ms: None,
        expires_at_ms: None,
        reset_every: v1::ResetPeriod::Month as i32,
        rollover_max: None,
        paid: Some(ALLOWANCE_PAID.to_string()),
    }
}

pub fn purchased(account: &str) -> v1::AddGrantRequest {
    v1::AddGrantRequest {
        account: account.to_string(),
        grant_id: PURCHASED_GRANT.to_string(),
        category: v1::GrantCategory::Purchased as i32,
        amount: PURCHASED_AMOUNT.to_string(),
        priority: None,
        starts_at_ms: None,
        expires_at_ms: None,
        reset_every: v1::ResetPeriod::Unspecified as i32,
        rollover_max: None,
        paid: Some(PURCHASED_PAID.to_string()),
    }
}

/// Makes the events of one client: its own random stream and its own event-id sequence, so
/// event ids are unique across clients and runs (`RUNTAG-CLIENT-SEQ`).
pub struct EventSource {
    accounts: Arc<Vec<String>>,
    id_prefix: String,
    next_sequence: u64,
    random: SmallRng,
}

impl EventSource {
    pub fn new(accounts: Arc<Vec<String>>, run_tag: &str, client: u32, seed: u64) -> Self {
        EventSource {
            accounts,
            id_prefix: format!("{run_tag}-{client}-"),
            next_sequence: 0,
            random: SmallRng::seed_from_u64(seed ^ (u64::from(client) << 32 | 0x5eed)),
        }
    }

    pub fn next_event(&mut self, occurred_at_ms: u64) -> v1::UsageEvent {
        let account = &self.accounts[self.random.gen_range(0..self.accounts.len())];
        let quantity = self.random.gen_range(1..=QUANTITY_MAX);
        let mut event_id = String::with_capacity(self.id_prefix.len() + 12);
        event_id.push_str(&self.id_prefix);
        event_id.push_str(&self.next_sequence.to_string());
        self.next_sequence += 1;
        v1::UsageEvent {
            event_id,
            account: account.clone(),
            meter: METER.to_string(),
            quantity: quantity.to_string(),
            dimensions: DIMENSIONS
                .iter()
                .map(|(key, value)| key_value(key, value))
                .collect(),
            occurred_at_ms,
            cost: None,
            hold_id: None,
        }
    }

    /// The next request of `count` events: `RecordUsage` for one, else `RecordUsageBatch`
    /// asking for `reply`.
    pub fn next_request(&mut self, count: u32, reply: v1::BatchReply) -> UsageRequest {
        let now = now_ms();
        if count == 1 {
            return UsageRequest::One(v1::RecordUsageRequest {
                event: Some(self.next_event(now)),
            });
        }
        UsageRequest::Batch {
            request: self.next_batch_at(count, reply, now),
            events: u64::from(count),
        }
    }

    /// A batch of `count` events occurring at `occurred_at_ms`, encoded straight into the bytes
    /// prost would encode for the events `next_event` draws (the same events, the same random
    /// draws; a test compares): building each event's strings and then encoding them was 42% of the load
    /// generator's samples at 16 x 100, CPU taken from the nodes sharing its cores.
    pub fn next_batch_at(
        &mut self,
        count: u32,
        reply: v1::BatchReply,
        occurred_at_ms: u64,
    ) -> RecordUsageBatchWire {
        let mut out = Vec::with_capacity(count as usize * 96 + 8);
        let mut event = Vec::with_capacity(128);
        let mut digits = [0u8; 20];
        for _ in 0..count {
            let account = &self.accounts[self.random.gen_range(0..self.accounts.len())];
            let quantity = self.random.gen_range(1..=QUANTITY_MAX);
            event.clear();
            // event_id (1): the prefix, then the sequence number.
            let sequence = decimal(self.next_sequence, &mut digits);
            self.next_sequence += 1;
            event.push(0x0a);
            encode_varint((self.id_prefix.len() + sequence.len()) as u64, &mut event);
            event.extend_from_slice(self.id_prefix.as_bytes());
            event.extend_from_slice(sequence);
            length_delimited(&mut event, 2, account.as_bytes());
            length_delimited(&mut event, 3, METER.as_bytes());
            length_delimited(&mut event, 4, decimal(u64::from(quantity), &mut digits));
            for (key, value) in DIMENSIONS {
                let pair_len = 2 + key.len() + 2 + value.len();
                event.push(5 << 3 | 2);
                encode_varint(pair_len as u64, &mut event);
                length_delimited(&mut event, 1, key.as_bytes());
                length_delimited(&mut event, 2, value.as_bytes());
            }
            event.push(6 << 3);
            encode_varint(occurred_at_ms, &mut event);
            length_delimited(&mut out, 1, &event);
        }
        // `atomic` (2) is false: not encoded. `reply` (3) when not the default.
        if reply as i32 != 0 {
            out.push(3 << 3);
            encode_varint(reply as i32 as u64, &mut out);
        }
        RecordUsageBatchWire::from(out)
    }
}

/// A usage request as [`crate::reply::UsageSender::send`] sends it.
pub enum UsageRequest {
    One(v1::RecordUsageRequest),
    /// A `RecordUsageBatchRequest`, encoded, and how many events it holds.
    Batch {
        request: RecordUsageBatchWire,
        events: u64,
    },
}

/// Length-delimited field `tag` (1 to 15, so its key is one byte) holding `bytes`.
fn length_delimited(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag << 3 | 2);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `value` in decimal, in `digits`.
fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &digits[at..]
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tally_proto::ToCommand;

    impl EventSource {
        fn next_events(&mut self, count: u32) -> Vec<v1::UsageEvent> {
            let now = now_ms();
            (0..count).map(|_| self.next_event(now)).collect()
        }
    }

    #[test]
    fn event_ids_are_unique_and_accounts_cover_the_range() {
        let accounts = account_ids("bench", 10);
        let mut first = EventSource::new(accounts.clone(), "run", 0, 7);
        let mut second = EventSource::new(accounts, "run", 1, 7);
        let mut ids = HashSet::new();
        let mut seen_accounts = HashSet::new();
        for event in first
            .next_events(500)
            .into_iter()
            .chain(second.next_events(500))
        {
            assert!(ids.insert(event.event_id.clone()), "{}", event.event_id);
            seen_accounts.insert(event.account.clone());
            let quantity: u32 = event.quantity.parse().unwrap();
            assert!((1..=QUANTITY_MAX).contains(&quantity));
        }
        assert_eq!(seen_accounts.len(), 10);
    }

    /// A batch encoded straight into bytes is the batch prost encodes for the same draws,
    /// for both reply settings (the default one not encoded), sizes from 2 events up.
    #[test]
    fn encoded_batches_are_prosts_encoding_of_the_same_events() {
        use prost::Message;
        let accounts = account_ids("bench", 1_000);
        let at = 1_790_000_000_123;
        for (client, count) in [(0, 2), (3, 100), (12, 1_000), (7, 8_190)] {
            let mut direct = EventSource::new(accounts.clone(), "run-x", client, 99);
            let mut built = EventSource::new(accounts.clone(), "run-x", client, 99);
            for round in 0..3 {
                let reply = [v1::BatchReply::UnsettledOnly, v1::BatchReply::EveryResult][round % 2];
                let wire = direct.next_batch_at(count, reply, at);
                let events: Vec<_> = (0..count).map(|_| built.next_event(at)).collect();
                let expected = v1::RecordUsageBatchRequest {
                    events,
                    atomic: false,
                    reply: reply as i32,
                };
                assert_eq!(
                    wire.bytes().as_ref(),
                    expected.encode_to_vec().as_slice(),
                    "client {client}, {count} events, round {round}"
                );
            }
        }
    }

    /// The requests the workload sends pass the API's own validation.
    #[test]
    fn requests_are_valid() {
        price_book().to_command().unwrap();
        cost_book().to_command().unwrap();
        create_account("bench-0000001").to_command().unwrap();
        allowance("bench-0000001").to_command().unwrap();
        purchased("bench-0000001").to_command().unwrap();
        let mut source = EventSource::new(account_ids("bench", 3), "t", 0, 1);
        v1::RecordUsageBatchRequest {
            events: source.next_events(3),
            atomic: false,
            ..Default::default()
        }
        .to_command()
        .unwrap();
        source
            .next_batch_at(3, v1::BatchReply::UnsettledOnly, now_ms())
            .to_command()
            .unwrap();
    }
}
