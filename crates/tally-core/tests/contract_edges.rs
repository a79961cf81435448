//! The ledger contract's edge cases, found by an audit of the ledger against
//! `shared/design/ledger-semantics.md` (sections cited as §n). Each test's doc comment states
//! the rule it holds the ledger to; several were bugs the audit found, kept here as regression
//! tests. After every entry the harness checks the state's invariants and that each journal
//! entry's postings balance per asset.

mod support;

use support::{amount, commands, time};
use tally_core::*;

const MINUTE: u64 = 60_000;
const DAY: u64 = 86_400_000;

struct L {
    state: LedgerState,
    now: u64,
    journal: Vec<JournalEntry>,
    events: Vec<LedgerEvent>,
}

impl L {
    /// An empty ledger at 2026-01-01T00:00:00Z.
    fn bare() -> Self {
        L {
            state: LedgerState::new(),
            now: parse_utc("2026-01-01T00:00:00Z").unwrap(),
            journal: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Reporting currency USD (scale 2), asset CREDITS (scale 0); book `p` prices CREDITS and
    /// book `u` prices USD, both `calls` at 1 each.
    fn new() -> Self {
        let mut l = L::bare();
        l.ok("init USD 2");
        l.ok("asset CREDITS 0");
        l.ok("prices p CREDITS : calls per_unit 1");
        l.ok("prices u USD : calls per_unit 1");
        l
    }

    fn at(&mut self, t: &str) {
        self.now = time(t, self.now);
    }

    fn apply(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        let result = self.state.apply(&Entry {
            at_ms: self.now,
            commands,
        });
        self.state
            .check_invariants()
            .unwrap_or_else(|e| panic!("invariant broken: {e}"));
        for entry in &result.journal {
            let mut sums: Vec<(AssetCode, Amount)> = Vec::new();
            for p in &entry.postings {
                match sums.iter_mut().find(|(asset, _)| *asset == p.asset) {
                    Some((_, sum)) => *sum = sum.checked_add(p.amount).unwrap(),
                    None => sums.push((p.asset.clone(), p.amount)),
                }
            }
            assert!(
                sums.iter().all(|(_, s)| s.is_zero()),
                "unbalanced {entry:?}"
            );
        }
        self.journal.extend(result.journal.iter().cloned());
        self.events.extend(result.events.iter().cloned());
        result.outcomes
    }

    /// All lines in one entry.
    fn entry(&mut self, lines: &[&str]) -> Vec<Outcome> {
        let now = self.now;
        let cmds = lines.iter().flat_map(|line| commands(line, now)).collect();
        self.apply(cmds)
    }

    fn run(&mut self, line: &str) -> Outcome {
        self.entry(&[line]).pop().unwrap()
    }

    fn usage(&mut self, event: UsageEvent) -> Outcome {
        self.apply(vec![Command::Usage(event)]).pop().unwrap()
    }

    fn ok(&mut self, line: &str) -> Outcome {
        let o = self.run(line);
        assert!(
            !matches!(o, Outcome::Rejected(_) | Outcome::Conflict { .. }),
            "{line}: {o:?}"
        );
        o
    }

    fn acct(&self, id: &str) -> AccountView {
        self.state.account(&AccountId::new(id).unwrap()).unwrap()
    }

    fn grant(&self, id: &str, g: &str) -> GrantView {
        self.acct(id)
            .grants
            .into_iter()
            .find(|x| x.id.as_str() == g)
            .unwrap()
    }

    fn report(&self, id: &str, month: Option<&str>) -> ReportView {
        let month = month.map(|m| parse_month(m).unwrap());
        self.state
            .report(Some(&AccountId::new(id).unwrap()), month)
            .unwrap()
    }

    fn hash(&self) -> String {
        self.state.state_hash_hex()
    }

    /// The events emitted since the last drain, as short strings.
    fn drain(&mut self) -> Vec<String> {
        self.events
            .drain(..)
            .map(|e| match e.kind {
                LedgerEventKind::BalanceLow { threshold, balance } => {
                    format!("low:{threshold}@{balance}")
                }
                LedgerEventKind::BalanceRecovered { threshold, balance } => {
                    format!("recovered:{threshold}@{balance}")
                }
                LedgerEventKind::BalanceDepleted { balance } => format!("depleted@{balance}"),
                LedgerEventKind::RechargeRequested { amount, balance } => {
                    format!("recharge:{amount}@{balance}")
                }
                LedgerEventKind::GrantExpired { grant, expired } => {
                    format!("grant_expired:{grant}:{expired}")
                }
                LedgerEventKind::HoldExpired { hold, released } => {
                    format!("hold_expired:{hold}:{released}")
                }
            })
            .collect()
    }
}

fn ev(account: &str, id: &str, meter: &str, qty: &str, occurred_at: u64) -> UsageEvent {
    UsageEvent {
        event_id: EventId::new(id).unwrap(),
        account: AccountId::new(account).unwrap(),
        meter: Meter::new(meter).unwrap(),
        quantity: Amount::parse("quantity", qty).unwrap(),
        dimensions: Dimensions::default(),
        occurred_at,
        cost: None,
        hold: None,
    }
}

fn settled(o: &Outcome) -> &Settlement {
    match o {
        Outcome::Settled(s) => s,
        other => panic!("expected settled, got {other:?}"),
    }
}

/// `settled`, `duplicate`, `already_applied`, ... or the rejection's code.
fn code(o: &Outcome) -> &'static str {
    match o {
        Outcome::Rejected(r) => r.code(),
        Outcome::Applied(
            Applied::AlreadyApplied | Applied::HoldExisted { .. } | Applied::HoldEnded { .. },
        ) => "already_applied",
        other => other.kind(),
    }
}

fn batch(events: Vec<UsageEvent>, atomic: bool) -> Vec<Command> {
    vec![Command::UsageBatch { events, atomic }]
}

/// The codes of a batch's items.
fn batch_codes(o: &Outcome) -> Vec<&'static str> {
    match o {
        Outcome::Batch(items) => items.iter().map(code).collect(),
        other => panic!("expected a batch, got {other:?}"),
    }
}

fn invalid_field(o: &Outcome) -> &str {
    match o {
        Outcome::Rejected(Rejection {
            reason: Reason::InvalidInput(e),
        }) => &e.field,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

fn allowance_granted(r: &ReportView) -> Amount {
    r.granted
        .iter()
        .filter(|(c, _, _)| *c == GrantCategory::Allowance)
        .fold(Amount::ZERO, |a, (_, _, x)| a.checked_add(*x).unwrap())
}

// ------------------------------------------------------------------ §1 ledger time

/// §1: an account's due transitions run before the entry touches it: a grant expiring exactly
/// at `now` is gone before the charge (and journaled before it); a grant cannot be added
/// already expired.
#[test]
fn an_expiry_at_exactly_now_runs_before_the_charge() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p limit=100");
    let mark = l.journal.len();
    l.ok("grant a g purchased 10 paid=1 expires=2026-01-01T01:00:00Z");
    l.at("2026-01-01T01:00:00Z");
    let o = l.ok("usage a e1 calls 3");
    let s = settled(&o);
    assert!(s.drawdown.is_empty(), "{s:?}");
    assert_eq!(s.debt_created, amount("3"));
    assert_eq!(l.grant("a", "g").state, "expired");
    let kinds: Vec<&str> = l.journal[mark..].iter().map(|j| j.kind.name()).collect();
    assert_eq!(kinds, ["grant_added", "grant_expired", "usage"]);
    let o = l.run("grant a g2 purchased 1 paid=1 expires=2026-01-01T01:00:00Z");
    assert_eq!(invalid_field(&o), "expires_at");
}

/// §1: several transitions due on one touch run in time order; a start and a reset at the
/// same instant both happen, and each new value first repays debt.
#[test]
fn due_transitions_on_one_touch_run_in_time_order() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p limit=100");
    l.ok("grant a exp purchased 10 paid=1 expires=+3h");
    l.ok("grant a daily allowance 5 reset=day");
    l.ok("grant a late purchased 50 paid=5 starts=+2d");
    l.ok("usage a e1 calls 40"); // daily 5, exp 10, debt 25
    let mark = l.journal.len();
    l.at("+3d");
    l.ok("tick");
    let times: Vec<u64> = l.journal[mark..].iter().map(|j| j.at_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // Day 1 reset repays 5 of 25; on day 2 `late` starts and repays 20; daily refills.
    assert_eq!(l.acct("a").debt, amount("0"));
    assert_eq!(l.grant("a", "late").remaining, amount("30"));
    assert_eq!(l.grant("a", "daily").remaining, amount("5"));
}

// ------------------------------------------------------------------ §4 grants

/// §4 drawdown order: priority, then the sooner of expiry and next reset, then `starts_at`,
/// then grant id in byte order (`B` < `b`).
#[test]
fn drawdown_ties_break_on_soonest_end_then_start_then_id_bytes() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.ok("grant a b purchased 1 paid=1 expires=2026-02-01T00:00:00Z");
    l.ok("grant a B purchased 1 paid=1 expires=2026-02-01T00:00:00Z");
    l.ok(
        "grant a early purchased 1 paid=1 expires=2026-02-01T00:00:00Z starts=2025-12-31T00:00:00Z",
    );
    l.ok("grant a w allowance 1 reset=week prio=50"); // next reset Jan 8
    let o = l.ok("usage a e1 calls 4");
    let order: Vec<&str> = settled(&o)
        .drawdown
        .iter()
        .map(|d| d.grant.as_str())
        .collect();
    assert_eq!(order, ["w", "early", "B", "b"]);
}

/// §4: voiding is idempotent: a retried void (its first answer lost) and a void of a grant
/// that expired first change nothing, and say how the grant ended instead of "voided 0".
#[test]
fn voiding_an_ended_grant_changes_nothing_and_says_how_it_ended() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.ok("grant a g purchased 10 paid=1");
    l.ok("grant a exp purchased 5 paid=1 expires=+1h");
    assert!(
        matches!(
            l.ok("void a g mistake"),
            Outcome::Applied(Applied::GrantVoided { voided, .. }) if voided == amount("10")
        ),
        "first void"
    );
    let before = l.hash();
    assert_eq!(
        l.ok("void a g mistake"),
        Outcome::Applied(Applied::GrantEnded {
            ended_as: GrantEndedAs::Voided,
            balance_after: amount("5"),
        })
    );
    assert_eq!(l.hash(), before, "a retried void changed the state");
    l.at("+1h");
    l.ok("tick");
    let before = l.hash();
    assert_eq!(
        l.ok("void a exp too-late"),
        Outcome::Applied(Applied::GrantEnded {
            ended_as: GrantEndedAs::Expired,
            balance_after: amount("0"),
        })
    );
    assert_eq!(
        l.hash(),
        before,
        "voiding an expired grant changed the state"
    );
    // Retried after the account was closed: still the answer to the void, not account_closed,
    // and nothing changes.
    l.ok("grant a live purchased 3 paid=1");
    l.ok("close a");
    let before = l.hash();
    assert!(
        matches!(
            l.run("void a g mistake"),
            Outcome::Applied(Applied::GrantEnded {
                ended_as: GrantEndedAs::Voided,
                ..
            })
        ),
        "retried void on a closed account"
    );
    assert_eq!(
        l.hash(),
        before,
        "a retried void on a closed account changed the state"
    );
}

/// Closing takes no value away by itself; what is left on a closed account (live or scheduled
/// grants) can still be voided, which is how a departed customer's unused purchase is
/// refunded or written off. A closed account emits no balance events: no warnings, and no
/// `recharge_requested` that would have a billing system charge a departed customer.
#[test]
fn a_closed_accounts_grants_can_be_voided_and_it_emits_no_balance_events() {
    let mut l = L::new();
    l.ok("account a USD book=u thresholds=5 recharge=5:20");
    l.ok("grant a paid purchased 10 paid=10");
    l.ok("grant a later purchased 7 paid=7 starts=+1h");
    l.ok("close a");
    assert_eq!(
        code(&l.run("grant a more purchased 1 paid=1")),
        "account_closed"
    );
    assert_eq!(code(&l.run("usage a e1 calls 1")), "account_closed");
    let o = l.ok("void a paid refund");
    assert_eq!(
        o,
        Outcome::Applied(Applied::GrantVoided {
            voided: amount("10"),
            balance_after: amount("0"),
        })
    );
    assert!(
        l.journal
            .iter()
            .any(|entry| matches!(&entry.kind, JournalKind::GrantVoided { reason, .. } if reason == "refund")),
        "the refund is in the journal with its reason"
    );
    l.ok("void a later refund");
    l.at("+2h");
    l.ok("tick");
    assert_eq!(
        l.acct("a").balance,
        amount("0"),
        "a voided scheduled grant never starts"
    );
    assert_eq!(
        l.drain(),
        Vec::<String>::new(),
        "no low, depleted or recharge events on a closed account"
    );
}

/// §4: a grant that has not started is not drawn; at its start it repays debt; voiding it
/// later zeroes what is left without re-creating the repaid debt.
#[test]
fn a_pending_grant_is_not_drawn_and_repays_debt_when_it_starts() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p limit=50 list=0.01");
    l.ok("grant a later purchased 100 paid=1 starts=+1h");
    let o = l.ok("usage a e1 calls 30");
    assert_eq!(settled(&o).debt_created, amount("30"));
    l.ok("grant a never purchased 100 paid=1 starts=+2h");
    l.ok("void a never mistake");
    l.at("+1h");
    let o = l.ok("usage a e2 calls 5");
    assert_eq!(settled(&o).drawdown.len(), 1);
    let v = l.acct("a");
    assert_eq!((v.debt, v.balance), (amount("0"), amount("65")));
    l.at("+2h");
    l.ok("tick");
    assert_eq!(
        l.acct("a").balance,
        amount("65"),
        "voided grant never started"
    );
    l.ok("void a later refund");
    let v = l.acct("a");
    assert_eq!((v.debt, v.balance), (amount("0"), amount("0")));
}

/// Create commands are idempotent: retrying an add-grant with the same content answers
/// AlreadyApplied, also after the grant expired; other content under the id is
/// `already_exists`; a new grant that is already expired is still refused.
#[test]
fn retrying_an_add_grant_after_the_grant_expired_is_already_applied() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    let line = "grant a g purchased 10 paid=1 expires=2026-01-01T01:00:00Z";
    l.ok(line);
    l.at("2026-01-01T00:30:00Z");
    assert_eq!(code(&l.run(line)), "already_applied");
    l.at("2026-01-01T02:00:00Z");
    l.ok("tick");
    let before = l.hash();
    let retry = l.run(line);
    assert_eq!(code(&retry), "already_applied");
    assert_eq!(before, l.hash());
    let other = l.run("grant a g purchased 11 paid=1 expires=2026-01-01T01:00:00Z");
    assert_eq!(code(&other), "already_exists");
    let new = l.run("grant a g2 purchased 10 paid=1 expires=2026-01-01T01:00:00Z");
    assert_eq!(invalid_field(&new), "expires_at");
}

// ------------------------------------------------------------------ §4 allowance resets

/// §4: a monthly reset anchored on the 31st falls on each month's last day (Feb 29 in a leap
/// year, Feb 28 otherwise) and back on the 31st; a reset at exactly `now` runs first.
#[test]
fn a_monthly_reset_anchored_on_the_31st_follows_month_ends_and_leap_years() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.at("2028-01-31T12:00:00Z");
    l.ok("grant a m allowance 10 reset=month");
    let mut seen = Vec::new();
    for t in [
        "2028-02-29T12:00:00Z",
        "2028-03-31T12:00:00Z",
        "2028-04-30T12:00:00Z",
        "2029-01-31T12:00:00Z",
        "2029-02-28T12:00:00Z",
    ] {
        l.at(t);
        l.ok(&format!("usage a e{} calls 1", seen.len()));
        assert_eq!(l.grant("a", "m").remaining, amount("9"), "{t}");
        seen.push(format_utc(l.grant("a", "m").next_reset.unwrap()));
    }
    assert_eq!(
        seen,
        [
            "2028-03-31T12:00:00.000Z",
            "2028-04-30T12:00:00.000Z",
            "2028-05-31T12:00:00.000Z",
            "2029-02-28T12:00:00.000Z",
            "2029-03-31T12:00:00.000Z"
        ]
    );
}

/// §4: at a reset the allowance is `amount` plus what is left up to `rollover_max`; the rest
/// expires, booked as breakage at its unit revenue.
#[test]
fn rollover_keeps_up_to_rollover_max_and_the_rest_is_breakage() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.ok("grant a m allowance 100 reset=week rollover=30 paid=10");
    l.ok("usage a e1 calls 85");
    l.at("+7d");
    l.ok("tick");
    assert_eq!(l.grant("a", "m").remaining, amount("115"));
    assert!(l.report("a", None).breakage.is_zero());
    l.at("+7d");
    l.ok("tick");
    // 115 left: 30 rolls over, 85 expires at 0.1 each.
    assert_eq!(l.grant("a", "m").remaining, amount("130"));
    assert_eq!(l.report("a", None).breakage, amount("8.5"));
}

/// §4: an allowance added with a `starts_at` in the past does not replay the resets before
/// it existed: no refill, no breakage in past months; its first reset is the first anchored
/// boundary after now, and that one is a real reset.
#[test]
fn a_backdated_allowance_does_not_replay_resets_from_before_it_was_added() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.at("2026-03-15T00:00:00Z");
    let added = l.ok(
        "grant a plan allowance 100 reset=month rollover=50 paid=10 starts=2026-01-01T00:00:00Z",
    );
    let Outcome::Applied(Applied::GrantAdded { balance_after, .. }) = added else {
        panic!("{added:?}")
    };
    assert_eq!(balance_after, amount("100"));
    let mark = l.journal.len();
    l.at("+1s");
    l.ok("tick");
    assert!(l.journal[mark..].is_empty(), "{:?}", &l.journal[mark..]);
    assert_eq!(l.acct("a").balance, amount("100"));
    let next = l.grant("a", "plan").next_reset.unwrap();
    assert_eq!(format_utc(next), "2026-04-01T00:00:00.000Z");
    for month in ["2026-01", "2026-02", "2026-03"] {
        assert!(l.report("a", Some(month)).breakage.is_zero(), "{month}");
    }
    assert_eq!(allowance_granted(&l.report("a", None)), amount("100"));
    l.ok("usage a e1 calls 30");
    l.at("2026-04-01T00:00:00Z");
    l.ok("tick");
    // 70 left: 50 roll over, 20 expire at 0.1 each.
    assert_eq!(l.grant("a", "plan").remaining, amount("150"));
    assert_eq!(l.report("a", None).breakage, amount("2"));
}

/// §4: the same for a daily allowance back-dated by months and added exactly on one of its
/// boundaries: that boundary is not run either, the next day is its first reset.
#[test]
fn a_backdated_daily_allowance_added_on_a_boundary_runs_no_missed_day() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.at("2026-03-22T00:00:00Z");
    let mark = l.journal.len();
    l.ok("grant a d allowance 10 reset=day starts=2026-01-01T00:00:00Z");
    l.at("+1s");
    l.ok("tick");
    let kinds: Vec<&str> = l.journal[mark..].iter().map(|j| j.kind.name()).collect();
    assert_eq!(kinds, ["grant_added"]);
    let g = l.grant("a", "d");
    assert_eq!(g.remaining, amount("10"));
    assert_eq!(
        format_utc(g.next_reset.unwrap()),
        "2026-03-23T00:00:00.000Z"
    );
    assert_eq!(allowance_granted(&l.report("a", None)), amount("10"));
}

/// §3/§4: at a closed account's next boundary, what of its allowance does not roll over
/// expires (breakage booked once) and nothing refills; later boundaries book nothing more.
/// A frozen account's allowance still resets. A closed account takes no new grant.
#[test]
fn a_closed_accounts_allowance_expires_at_its_next_boundary_and_never_refills() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.ok("account b CREDITS book=p");
    l.ok("grant a plan allowance 100 reset=month rollover=20 paid=10");
    l.ok("grant b plan allowance 100 reset=month paid=10");
    l.ok("usage a e1 calls 30");
    l.ok("usage b e1 calls 30");
    l.at("2026-01-15T00:00:00Z");
    l.ok("close a");
    l.ok("freeze b");
    l.drain();
    l.at("2026-02-01T00:00:00Z");
    l.ok("tick");
    // a: 70 left, 20 roll over, 50 expire; b (frozen): 70 expire, refilled to 100.
    let mut expired = l.drain();
    expired.sort();
    assert_eq!(expired, ["grant_expired:plan:50", "grant_expired:plan:70"]);
    assert_eq!(l.grant("a", "plan").remaining, amount("20"));
    assert_eq!(l.report("a", None).breakage, amount("5"));
    assert_eq!(l.grant("b", "plan").remaining, amount("100"));
    assert_eq!(l.report("b", None).breakage, amount("7"));
    let mark = l.journal.len();
    l.at("2026-07-01T00:00:01Z");
    l.ok("tick");
    assert!(l.journal[mark..].iter().all(|j| j.account.as_str() != "a"));
    let all = l.report("a", None);
    assert_eq!(all.breakage, amount("5"));
    assert_eq!(allowance_granted(&all), amount("100"));
    assert_eq!(l.acct("a").balance, amount("20"));
    assert_eq!(
        code(&l.run("grant a g2 purchased 4 paid=1")),
        "account_closed"
    );
}

// ------------------------------------------------------------------ §2 money

/// §2 arithmetic is exact: an amount is taken as written or refused, never rounded to fit
/// `Decimal`'s 28 digits.
#[test]
fn an_amount_with_more_digits_than_decimal_holds_is_refused() {
    for text in [
        "1.00000000000000000000000000001",
        "0.1000000000000000000000000000001",
        "999999999999.999999999999999999",
    ] {
        match Amount::parse("amount", text) {
            Err(e) => assert_eq!(e.field, "amount", "{text}"),
            Ok(value) => panic!("{text} parsed as {value}"),
        }
    }
    for text in [
        "9999999999.999999999999999999",
        "0.000000000000000001",
        "1.5",
    ] {
        assert_eq!(Amount::parse("amount", text).unwrap().to_string(), text);
    }
}

/// §2: amounts of an asset with more than 12 decimals are limited to 10^(27 - scale) so that
/// balances stay exact: at scale 18 a grant above 10^9 is rejected naming `amount`, and a
/// 10^-18 charge on a 10^9 grant moves the grant and the balance by exactly that.
#[test]
fn a_scale_18_asset_keeps_every_digit_within_its_limit() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("asset S18 18");
    l.ok("prices p S18 : t per_unit 1");
    l.ok("account a S18 book=p");
    let before = l.hash();
    for big in ["1000000000000", "1000000000.000000000000000001"] {
        let o = l.run(&format!("grant a big promotional {big}"));
        assert_eq!(invalid_field(&o), "amount", "{big}");
    }
    assert_eq!(before, l.hash());
    l.ok("grant a g promotional 1000000000");
    let o = l.usage(ev("a", "e1", "t", "0.000000000000000001", l.now));
    let s = settled(&o);
    let left = amount("999999999.999999999999999999");
    assert_eq!(s.charged, amount("0.000000000000000001"));
    assert_eq!(s.balance_after, left);
    assert_eq!(l.grant("a", "g").remaining, left);
    assert_eq!(l.acct("a").balance, left);
}

/// §2: overflow is a rejection, never a wrap, and changes nothing.
#[test]
fn an_overflowing_charge_is_rejected_and_changes_nothing() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("asset S2 2");
    l.ok("prices p S2 : t per_unit 1000000000000000 ; k package 0.01 1000000000000000");
    l.ok("account a S2 book=p limit=1000000000000000");
    l.ok("grant a g promotional 1000000000000000");
    for (id, meter) in [("e1", "t"), ("e2", "k")] {
        let before = l.hash();
        let o = l.usage(ev("a", id, meter, "1000000000000000", l.now));
        assert_eq!(code(&o), "overflow", "{id}: {o:?}");
        assert_eq!(before, l.hash(), "{id}");
    }
}

// ------------------------------------------------------------------ §5 prices and cost

/// §5 package pricing rounds up per event, from the exact remainder: a quantity a hair above
/// a whole number of packages costs one package more.
#[test]
fn package_pricing_rounds_up_a_remainder_too_small_for_the_quotient() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("asset CR 6");
    l.ok("prices p CR : calls package 7 0.000001");
    l.ok("account a CR book=p");
    l.ok("grant a g promotional 20000");
    let o = l.ok("usage a e1 calls 70000000000.000000000000000001");
    assert_eq!(settled(&o).charged, amount("10000.000001"));
    assert_eq!(
        settled(&l.ok("usage a e2 calls 70")).charged,
        amount("0.00001")
    );
}

/// §5 rate matching: the most specific matching rate wins, extra event dimensions are
/// ignored; two equally specific rates that can both match are rejected at publish.
#[test]
fn rate_matching_picks_the_most_specific_and_rejects_ambiguous_books() {
    let mut l = L::bare();
    l.ok("init USD 2");
    let o = l.run("prices p USD : t[model=x] per_unit 1 ; t[region=eu] per_unit 2");
    assert!(matches!(o, Outcome::Rejected(_)), "{o:?}");
    let o = l.run("prices p USD : t per_unit 1 ; t per_unit 2");
    assert!(matches!(o, Outcome::Rejected(_)), "{o:?}");
    l.ok("prices p USD : t per_unit 1 ; t[model=x] per_unit 2 ; t[model=x,region=eu] per_unit 3 ; t[model=y] per_unit 5");
    l.ok("account a USD book=p");
    l.ok("grant a g promotional 100");
    for (line, charged) in [
        ("usage a e1 t 1 model=x zone=9", "2"),
        ("usage a e2 t 1 model=x region=eu zone=9", "3"),
        ("usage a e3 t 1 model=z region=eu", "1"),
        ("usage a e4 t 1 a=1 model=y", "5"),
        ("usage a e5 t 1 model=x region=us", "2"),
    ] {
        assert_eq!(settled(&l.ok(line)).charged, amount(charged), "{line}");
    }
}

/// §5 cost: a cost the event carries is reported (and its margin computed) exactly as
/// carried; costs from the cost book still accrue and round per (account, meter).
#[test]
fn a_cost_carried_by_the_event_is_reported_as_carried() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("prices p USD : t per_unit 1");
    l.ok("costs : t per_unit 0.005");
    l.ok("account a USD book=p");
    l.ok("grant a g purchased 100 paid=100");
    let o = l.ok("usage a e1 t 1"); // cost book: 0.005 rounds half-even to 0.00
    assert_eq!(settled(&o).cost, amount("0"));
    let o = l.ok("usage a e2 t 1 cost=0.01");
    assert_eq!(
        (settled(&o).cost, settled(&o).margin),
        (amount("0.01"), amount("0.99"))
    );
    let o = l.ok("usage a e3 t 1"); // cost book accrued 0.010: 0.01
    assert_eq!(settled(&o).cost, amount("0.01"));
    let r = l.report("a", None);
    assert_eq!((r.cost, r.margin), (amount("0.02"), amount("2.98")));
}

/// §5 "rounding never leaks money" for costs the events carry: a provider's per-call cost
/// finer than the reporting scale ($0.0004 at 2 decimals) is accepted and accrues per
/// (account, meter) like the cost book's, so 1,000 of them report $0.40, not 1,000 roundings
/// to $0.00; a cost at the reporting scale in between is still reported exactly as carried.
/// More than 12 decimals is refused naming `cost`.
#[test]
fn fine_costs_carried_by_events_accrue_instead_of_rounding_away() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("prices p USD : t per_unit 0.01");
    l.ok("account a USD book=p");
    l.ok("grant a g purchased 100 paid=100");
    let mut reported = amount("0");
    for i in 0..1_000 {
        let o = l.ok(&format!("usage a e{i} t 1 cost=0.0004"));
        reported = reported.checked_add(settled(&o).cost).unwrap();
        if i == 500 {
            let o = l.ok("usage a coarse t 1 cost=0.05");
            assert_eq!(settled(&o).cost, amount("0.05"));
            reported = reported.checked_add(settled(&o).cost).unwrap();
        }
    }
    assert_eq!(reported, amount("0.45"));
    let r = l.report("a", None);
    assert_eq!((r.cost, r.margin), (amount("0.45"), amount("9.56")));
    let o = l.run("usage a fine t 1 cost=0.0000000000001");
    assert_eq!(invalid_field(&o), "cost");
}

/// §6 "no rate for the meter" says which of the three it is: no price book on the account, a
/// book whose first version is not in force yet (and when it will be), or no rate of the
/// version in force matching the meter and dimensions.
#[test]
fn no_rate_says_why() {
    let mut l = L::new();
    l.ok("account nobook CREDITS");
    l.ok("grant nobook g promotional 10");
    l.ok("prices later CREDITS from=+1h : calls per_unit 1");
    l.ok("account early CREDITS book=later");
    l.ok("grant early g promotional 10");
    l.ok("account a CREDITS book=p");
    l.ok("grant a g promotional 10");
    let message = |o: Outcome| match o {
        Outcome::Rejected(r) => {
            assert_eq!(r.code(), "no_rate");
            r.reason.message()
        }
        other => panic!("{other:?}"),
    };
    assert!(message(l.run("usage nobook e1 calls 1")).contains("the account has no price book"));
    let early = message(l.run("usage early e2 calls 1"));
    assert!(
        early.contains("price book later has no version in force yet"),
        "{early}"
    );
    let unmatched = message(l.run("usage a e3 videos 1"));
    assert!(
        unmatched.contains("in price book p (version 1, in force)"),
        "{unmatched}"
    );
}

// ------------------------------------------------------------------ §6 usage events

/// §6: an event id is remembered through settled_at + window + 5 min inclusive, so a replay
/// at that last instant (its occurred_at still inside the window) is a duplicate; one ms
/// later it is outside the time window. No replay charges twice.
#[test]
fn a_replay_at_the_last_instant_of_the_window_is_a_duplicate() {
    let mut l = L::bare();
    l.ok("init USD 2 window=1d");
    l.ok("prices p USD : t per_unit 1");
    l.ok("account a USD book=p");
    l.ok("grant a g purchased 100 paid=100");
    let settled_at = l.now;
    let occurred = settled_at + 5 * MINUTE; // the future tolerance: accepted
    settled(&l.usage(ev("a", "e1", "t", "1", occurred)));
    l.now = settled_at + DAY + 5 * MINUTE;
    let replay = l.usage(ev("a", "e1", "t", "1", occurred));
    assert!(matches!(replay, Outcome::Duplicate(_)), "{replay:?}");
    l.now += 1;
    let replay = l.usage(ev("a", "e1", "t", "1", occurred));
    assert_eq!(code(&replay), "outside_time_window");
    // Times a person reads: RFC 3339, not milliseconds since the epoch.
    let Outcome::Rejected(rejection) = &replay else {
        panic!("{replay:?}")
    };
    assert!(
        rejection.reason.message().starts_with(&format!(
            "occurred_at {} is outside the accepted window {} .. ",
            format_utc(occurred),
            format_utc(l.now - DAY)
        )),
        "{}",
        rejection.reason.message()
    );
    assert_eq!(l.acct("a").balance, amount("99"));
}

/// §6 duplicate: the original result comes back (with the price version that priced it)
/// after a new version took effect, and also after the account was frozen; nothing changes.
#[test]
fn a_duplicate_returns_the_original_result_after_a_price_change_and_a_freeze() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("prices p USD : t per_unit 1");
    l.ok("account a USD book=p");
    l.ok("grant a g promotional 100");
    assert_eq!(settled(&l.ok("usage a e1 t 2")).price_version, 1);
    l.ok("prices p USD from=+1h : t per_unit 2");
    l.now += 3_600_000;
    let second = l.ok("usage a e2 t 2");
    assert_eq!(
        (settled(&second).price_version, settled(&second).charged),
        (2, amount("4"))
    );
    let e1 = ev("a", "e1", "t", "2", l.now - 3_600_000);
    match l.usage(e1.clone()) {
        Outcome::Duplicate(s) => {
            assert_eq!((s.price_version, s.charged), (1, amount("2")));
            assert_eq!(s.balance_after, amount("98"));
        }
        other => panic!("{other:?}"),
    }
    l.ok("freeze a");
    let before = l.hash();
    assert_eq!(code(&l.usage(e1)), "duplicate");
    assert_eq!(before, l.hash());
}

/// §6 "same content" is by value: trailing zeros, leading zeros and negative zero do not make
/// a conflict; a missing cost does.
#[test]
fn same_content_ignores_trailing_zeros_and_negative_zero() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("prices p USD : t per_unit 1");
    l.ok("account a USD book=p");
    l.ok("grant a g promotional 100");
    l.ok("usage a e1 t 1.5 cost=0");
    assert_eq!(code(&l.run("usage a e1 t 1.500 cost=-0")), "duplicate");
    assert_eq!(code(&l.run("usage a e1 t 01.50 cost=0.000")), "duplicate");
    assert_eq!(code(&l.run("usage a e1 t 1.5")), "conflict");
    l.ok("usage a e2 t 0");
    assert_eq!(code(&l.run("usage a e2 t -0")), "duplicate");
    assert_eq!(code(&l.run("usage a e2 t 0.0")), "duplicate");
}

/// §6 atomic batch: when one event fails, nothing changes (balances, dedup memory, accruals,
/// reports), so a retry after a top-up settles every event; a conflict inside the batch
/// rolls it back too; an event settled before the batch is answered as the duplicate it is.
#[test]
fn an_atomic_batch_that_fails_changes_nothing() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("prices p USD : t per_unit 0.001 ; g graduated 10:1,*:0.5");
    l.ok("account a USD book=p");
    l.ok("grant a g promotional 10");
    l.ok("usage a pre t 1");
    let events = |n: u64| {
        vec![
            ev("a", "b1", "t", "3", n),
            ev("a", "b2", "g", "5", n),
            ev("a", "b1", "t", "3", n), // same id, same content: duplicate
            ev("a", "b3", "g", "20", n), // 5 x 1 + 15 x 0.5 = 12.5 > 5 left
        ]
    };
    let (before, remembered) = (l.hash(), l.state.remembered_event_count());
    let aborted = l.apply(batch(events(l.now), true)).remove(0);
    let codes = batch_codes(&aborted);
    assert_eq!(
        codes,
        [
            "batch_aborted",
            "batch_aborted",
            "batch_aborted",
            "insufficient_funds"
        ]
    );
    assert_eq!(before, l.hash(), "state changed by an aborted atomic batch");
    assert_eq!(remembered, l.state.remembered_event_count());
    l.ok("grant a g2 promotional 100");
    let Outcome::Batch(items) = l.apply(batch(events(l.now), true)).remove(0) else {
        panic!("not a batch")
    };
    assert_eq!(settled(&items[0]).charged, amount("0")); // 0.001 + 0.003 accrued: 0.00
    assert_eq!(code(&items[2]), "duplicate");
    assert_eq!(settled(&items[3]).charged, amount("12.5"));
    let before = l.hash();
    let n = l.now;
    let conflicting = vec![ev("a", "c1", "t", "3", n), ev("a", "c1", "t", "4", n)];
    let o = l.apply(batch(conflicting, true));
    // Nothing with id c1 settled (its first copy is undone with the batch), so the second is
    // no `conflict` ("settled before with other content"): refused, naming the earlier one.
    assert_eq!(batch_codes(&o[0]), ["batch_aborted", "invalid_argument"]);
    let Outcome::Batch(items) = &o[0] else {
        unreachable!()
    };
    assert_eq!(invalid_field(&items[1]), "events[1].event_id");
    assert!(
        format!("{:?}", items[1]).contains("earlier in this atomic batch (events[0])"),
        "{:?}",
        items[1]
    );
    assert_eq!(before, l.hash());
    // A conflict with an event settled before the batch stays `conflict`.
    let o = l.apply(batch(
        vec![ev("a", "c2", "t", "1", n), ev("a", "pre", "t", "2", n)],
        true,
    ));
    assert_eq!(batch_codes(&o[0]), ["batch_aborted", "conflict"]);
    assert_eq!(before, l.hash());
    // An event that settled before the batch is no part of what the abort undid: it is
    // answered `duplicate` with its settlement (it stays charged), not `batch_aborted`,
    // "nothing changed", which would have a caller that lost its first answer charge it anew.
    let retried = vec![
        ev("a", "pre", "t", "1", n),
        ev("a", "d1", "t", "1", n),
        ev("a", "d2", "g", "100000", n),
    ];
    let o = l.apply(batch(retried, true));
    assert_eq!(
        batch_codes(&o[0]),
        ["duplicate", "batch_aborted", "insufficient_funds"]
    );
    assert_eq!(before, l.hash());
}

/// §6/§9: an aborted atomic batch leaves the ledger-wide report as it was, also where it was
/// the first to touch a month or an asset (those sums are taken out again, not left at zero:
/// `L::apply` compares the ledger-wide sums with the accounts' after every entry).
#[test]
fn an_aborted_atomic_batch_leaves_the_ledger_wide_report_as_it_was() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.ok("grant a g purchased 5 paid=1");
    l.ok("account b USD book=u limit=10");
    l.at("+40d");
    let before = l.state.report(None, None);
    let n = l.now;
    let o = l.apply(batch(
        vec![
            ev("a", "x1", "calls", "2", n),
            ev("b", "y1", "calls", "3", n),
            ev("a", "x2", "calls", "9", n),
        ],
        true,
    ));
    assert_eq!(
        batch_codes(&o[0]),
        ["batch_aborted", "batch_aborted", "insufficient_funds"]
    );
    assert_eq!(l.state.report(None, None), before);
    // The same batch without the failing event settles, and the sums count it.
    let o = l.apply(batch(
        vec![
            ev("a", "x1", "calls", "2", n),
            ev("b", "y1", "calls", "3", n),
        ],
        true,
    ));
    assert_eq!(batch_codes(&o[0]), ["settled", "settled"]);
    let after = l.state.report(None, None).unwrap();
    assert_eq!(after.events, before.unwrap().events + 2);
}

/// §5: versions are numbered in publish order, not by their times: a book's first version in
/// force is the earliest `effective_from`, which `no_rate` and `price show --at` name.
#[test]
fn the_first_version_of_a_book_is_its_earliest_not_its_first_published() {
    let mut l = L::new();
    l.ok("prices q CREDITS from=+10d : calls per_unit 1");
    l.ok("prices q CREDITS from=+1d : calls per_unit 2");
    let day = parse_utc("2026-01-02T00:00:00Z").unwrap();
    assert_eq!(
        l.state
            .price_first_effective_from(&BookId::new("q").unwrap()),
        Some(day)
    );
    l.ok("account a CREDITS book=q");
    l.ok("grant a g purchased 10 paid=1");
    let o = l.run("usage a e1 calls 1");
    assert!(
        matches!(&o, Outcome::Rejected(r) if r.reason.message().contains("(the first takes effect at 2026-01-02T00:00:00.000Z)")),
        "{o:?}"
    );
}

/// §6: a batch carries up to 8,190 events; one more is rejected.
#[test]
fn a_batch_carries_at_most_8190_events() {
    let mut l = L::bare();
    l.ok("init USD 2");
    l.ok("prices p USD : t per_unit 0");
    l.ok("account a USD book=p");
    let n = l.now;
    let events = |k: usize| -> Vec<UsageEvent> {
        (0..k)
            .map(|i| ev("a", &format!("x{k}-{i}"), "t", "1", n))
            .collect()
    };
    let o = l.apply(batch(events(8190), false));
    assert!(matches!(&o[0], Outcome::Batch(v) if v.len() == 8190));
    let o = l.apply(batch(events(8191), false));
    assert!(matches!(o[0], Outcome::Rejected(_)));
}

// ------------------------------------------------------------------ §7 holds

/// §7: beyond its hold an event needs free available value; without it the whole event is
/// rejected and the hold keeps what it had; with it the hold covers first.
#[test]
fn a_capture_beyond_the_hold_without_free_value_is_rejected_whole() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 10 paid=10");
    l.ok("authorize a h 6 10m");
    l.ok("authorize a h2 3 10m"); // 1 free
    assert_eq!(
        code(&l.run("usage a e1 calls 8 hold=h")),
        "insufficient_funds"
    );
    let v = l.acct("a");
    assert_eq!((v.balance, v.held), (amount("10"), amount("9")));
    let h = v.holds.iter().find(|h| h.id.as_str() == "h").unwrap();
    assert_eq!((h.remaining, h.captured), (amount("6"), amount("0")));
    let o = l.run("usage a e1 calls 7 hold=h");
    assert_eq!(settled(&o).from_hold, amount("6"));
    assert_eq!(l.acct("a").held, amount("3"));
}

/// §1/§7: a hold expires at exactly `expires_at`: a release in that instant (no tick yet)
/// runs the expiry first and is a no-op, an event naming the hold gets nothing from it; the
/// hold ends once: a later release changes nothing and emits nothing.
#[test]
fn a_hold_expires_at_its_instant_and_ends_once() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 10 paid=10");
    l.ok("authorize a h 4 1m");
    l.now = parse_utc("2026-01-01T00:01:00Z").unwrap() - 1;
    assert_eq!(
        settled(&l.run("usage a e1 calls 1 hold=h")).from_hold,
        amount("1")
    );
    l.now += 1;
    let outs = l.entry(&["release a h", "usage a e2 calls 1 hold=h"]);
    assert!(
        matches!(
            outs[0],
            Outcome::Applied(Applied::HoldEnded {
                ended_as: HoldEndedAs::Expired,
                ended_at,
                ..
            }) if ended_at == l.now
        ),
        "{:?}",
        outs[0]
    );
    assert_eq!(settled(&outs[1]).from_hold, amount("0"));
    assert_eq!(l.drain(), ["hold_expired:h:3"]);
    l.ok("tick");
    assert_eq!(code(&l.run("release a h")), "already_applied");
    assert!(l.drain().is_empty());
    let v = l.acct("a");
    assert_eq!((v.held, v.available), (amount("0"), amount("8")));
}

/// §7 with retries: an authorize that went through answers AlreadyApplied when retried, even
/// on an account frozen since; a new hold there is `account_frozen`; another amount under the
/// same id is `already_exists`.
#[test]
fn a_retried_authorize_on_a_since_frozen_account_is_already_applied() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 10 paid=10");
    l.ok("authorize a h 4 1m");
    l.ok("freeze a");
    let o = l.run("authorize a h 4 1m");
    assert_eq!(code(&o), "already_applied");
    assert_eq!(l.acct("a").held, amount("4"));
    assert_eq!(code(&l.run("authorize a h2 1 1m")), "account_frozen");
    assert_eq!(code(&l.run("authorize a h 5 1m")), "already_exists");
}

/// Retries of writes that went through: closing an account again answers AlreadyApplied
/// (closing is final; other changes to it stay `account_closed`), and a price or cost version
/// published with an explicit `effective_from` answers with the version it made, even once
/// that time has passed (nothing is published twice). Other rates at the same time are a new
/// publish, refused once in the past.
#[test]
fn retried_close_and_publish_answer_what_they_did_the_first_time() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p");
    l.ok("close a");
    assert_eq!(code(&l.run("close a")), "already_applied");
    assert_eq!(code(&l.run("freeze a")), "account_closed");
    assert_eq!(code(&l.run("unfreeze a")), "account_closed");

    let first = l.ok("prices q CREDITS from=+1m : calls per_unit 2");
    let Outcome::Applied(Applied::PricesPublished {
        version,
        effective_from,
        ..
    }) = first
    else {
        panic!("{first:?}")
    };
    l.at("+2m");
    let again = l.run(&format!(
        "prices q CREDITS from={} : calls per_unit 2",
        format_utc(effective_from)
    ));
    assert_eq!(
        again,
        Outcome::Applied(Applied::PricesPublished {
            book: BookId::new("q").unwrap(),
            version,
            effective_from,
        })
    );
    let other = l.run(&format!(
        "prices q CREDITS from={} : calls per_unit 3",
        format_utc(effective_from)
    ));
    assert_eq!(code(&other), "effective_in_past");

    let costs = l.ok("costs c USD from=+1m : calls per_unit 0.5");
    let Outcome::Applied(Applied::CostsPublished {
        version,
        effective_from,
    }) = costs
    else {
        panic!("{costs:?}")
    };
    l.at("+2m");
    let again = l.run(&format!(
        "costs c USD from={} : calls per_unit 0.5",
        format_utc(effective_from)
    ));
    assert_eq!(
        again,
        Outcome::Applied(Applied::CostsPublished {
            version,
            effective_from,
        })
    );
}

/// §3/§7: authorize counts the credit limit (`available + credit_limit >= amount`); holds
/// reserve only value that exists (`held <= balance + credit_limit`): lowering the credit
/// limit trims open holds, as voiding a grant does.
#[test]
fn lowering_the_credit_limit_trims_open_holds() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p limit=100");
    l.ok("grant a g purchased 30 paid=3");
    l.ok("authorize a h 130 10m");
    assert_eq!(code(&l.run("authorize a h2 1 10m")), "insufficient_funds");
    l.ok("update a limit=20");
    let v = l.acct("a");
    assert_eq!((v.held, v.available), (amount("50"), amount("-20")));
    l.ok("update a limit=0");
    let v = l.acct("a");
    assert_eq!((v.held, v.available), (amount("30"), amount("0")));
    l.ok("void a g mistake");
    let v = l.acct("a");
    assert_eq!((v.held, v.available), (amount("0"), amount("0")));
}

/// §7: after a credit-limit cut, a top-up is free value for any usage, not swallowed by a
/// hold that reserved the credit that is gone.
#[test]
fn a_top_up_after_a_credit_limit_cut_is_not_swallowed_by_a_hold() {
    let mut l = L::new();
    l.ok("account a USD book=u limit=100");
    l.ok("authorize a h 100 10m");
    l.ok("update a limit=0");
    let v = l.acct("a");
    assert_eq!((v.held, v.available), (amount("0"), amount("0")));
    l.ok("grant a g purchased 50 paid=50");
    assert_eq!(
        code(&l.run("usage a e1 calls 60 hold=h")),
        "insufficient_funds"
    );
    assert_eq!(code(&l.run("usage a e2 calls 1")), "settled");
    assert_eq!(l.acct("a").balance, amount("49"));
}

// ------------------------------------------------------------------ §8 emitted events

/// §8: every threshold crossed is reported, in order, even several in one entry and both
/// ways.
#[test]
fn each_threshold_crossing_in_one_entry_is_emitted() {
    let mut l = L::new();
    l.ok("account a USD book=u thresholds=8,5,2");
    l.ok("grant a g purchased 10 paid=10");
    l.drain();
    assert_eq!(code(&l.run("batch a calls b1:3 b2:3 b3:3")), "batch");
    assert_eq!(l.drain(), ["low:8@7", "low:5@4", "low:2@1"]);
    l.entry(&[
        "grant a g2 purchased 5 paid=5",
        "usage a e1 calls 2",
        "grant a g3 purchased 5 paid=5",
    ]);
    let want = [
        "recovered:2@6",
        "recovered:5@6",
        "low:5@4",
        "recovered:5@9",
        "recovered:8@9",
    ];
    assert_eq!(l.drain(), want);
}

/// §8: emitted events carry a contiguous ledger-wide sequence; an aborted atomic batch
/// consumes none.
#[test]
fn event_sequence_numbers_are_contiguous() {
    let mut l = L::new();
    l.ok("account a USD book=u limit=5 thresholds=3");
    l.ok("grant a g purchased 4 paid=4");
    l.ok("usage a e1 calls 4");
    l.ok("usage a e2 calls 1");
    let outs = l.entry(&[
        "grant a g2 purchased 10 paid=10",
        "batch_atomic a calls x1:9 x2:9",
    ]);
    assert_eq!(code(&outs[0]), "applied");
    assert_eq!(
        batch_codes(&outs[1]),
        ["batch_aborted", "insufficient_funds"]
    );
    l.ok("usage a e3 calls 12");
    let seqs: Vec<u64> = l.events.iter().map(|e| e.seq).collect();
    assert!(seqs.len() >= 4, "{:?}", l.events);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// §8: `recharge_requested` is emitted once per crossing until purchased value arrives: a
/// promotional grant does not re-arm it, nor does a purchased grant that starts later until
/// it starts; once it has, the next crossing asks again.
#[test]
fn a_purchase_that_starts_later_rearms_recharge_only_once_it_starts() {
    let mut l = L::new();
    l.ok("account a USD book=u recharge=5:20");
    l.ok("grant a g purchased 10 paid=10");
    l.ok("usage a e1 calls 6");
    assert_eq!(l.drain(), ["recharge:20@4"]);
    l.ok("grant a p1 promotional 10");
    l.ok("usage a e2 calls 11");
    l.ok("grant a later purchased 20 paid=20 starts=+1d");
    l.ok("usage a e3 calls 1");
    assert_eq!(
        l.drain(),
        Vec::<String>::new(),
        "asked again before a purchase arrived"
    );
    l.at("+1d");
    l.ok("tick");
    assert_eq!(l.acct("a").balance, amount("22"));
    l.ok("usage a e4 calls 18");
    assert_eq!(l.drain(), ["recharge:20@4"]);
}

/// §8 "once per crossing until a purchased grant arrives": an account update that sends the
/// same recharge rule again (a client saving the whole account form) does not re-arm a
/// pending request; a changed rule does.
#[test]
fn the_same_recharge_rule_sent_again_does_not_ask_twice() {
    let mut l = L::new();
    l.ok("account a USD book=u recharge=5:20");
    l.ok("grant a g purchased 10 paid=10");
    l.ok("usage a e1 calls 6");
    assert_eq!(l.drain(), ["recharge:20@4"]);
    l.ok("update a recharge=5:20");
    l.ok("usage a e2 calls 1");
    assert_eq!(
        l.drain(),
        Vec::<String>::new(),
        "asked twice for one crossing"
    );
    l.ok("update a recharge=5:30");
    l.ok("usage a e3 calls 1");
    assert_eq!(l.drain(), ["recharge:30@2"]);
}

/// §8: a threshold of 0 and the depletion recovering in one step emit one
/// `balance_recovered {threshold: 0}`, not the same event twice; each still fires alone.
#[test]
fn a_zero_threshold_and_the_depletion_recover_as_one_event() {
    let mut l = L::new();
    l.ok("account a USD book=u thresholds=0 limit=10");
    l.ok("grant a g purchased 5 paid=5");
    l.ok("usage a e1 calls 7");
    assert_eq!(l.drain(), ["low:0@-2", "depleted@-2"]);
    l.ok("grant a g2 purchased 10 paid=10");
    assert_eq!(l.drain(), ["recovered:0@8"]);
    // Down to exactly 0: depleted (<= 0), not below the threshold (< 0); back up: the
    // depletion's recovery alone.
    l.ok("usage a e2 calls 8");
    assert_eq!(l.drain(), ["depleted@0"]);
    l.ok("grant a g3 purchased 1 paid=1");
    assert_eq!(l.drain(), ["recovered:0@1"]);
}

// ------------------------------------------------------------------ §5/§9 revenue and reports

/// §9 reports are per calendar month: an event in the last ms of January is January's; an
/// expiry at 00:00 on Feb 1 is January's breakage (the last instant the value was live).
#[test]
fn report_months_split_at_midnight_on_the_first() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 100 paid=100 expires=2026-02-01T00:00:00Z");
    l.now = parse_utc("2026-02-01T00:00:00Z").unwrap() - 1;
    l.ok("usage a e1 calls 1");
    l.at("+1s");
    l.ok("grant a g2 purchased 5 paid=5");
    assert_eq!(settled(&l.ok("usage a e2 calls 2")).revenue, amount("2"));
    let (jan, feb) = (
        l.report("a", Some("2026-01")),
        l.report("a", Some("2026-02")),
    );
    assert_eq!(
        (jan.events, jan.revenue, jan.breakage),
        (1, amount("1"), amount("99"))
    );
    assert_eq!(
        (feb.events, feb.revenue, feb.breakage),
        (1, amount("2"), amount("0"))
    );
    let whole = l.state.report(None, parse_month("2026-02")).unwrap();
    assert_eq!((whole.events, whole.granted.len()), (1, 1));
}

/// §3: an account in the reporting currency has list price 1: creating or updating it with
/// another one is rejected naming `list_price` and changes nothing; its debt is revenue 1:1.
#[test]
fn an_account_in_the_reporting_currency_must_have_list_price_one() {
    let mut l = L::new();
    let before = l.hash();
    let o = l.run("account a USD book=u limit=100 list=0.5");
    assert_eq!(invalid_field(&o), "list_price");
    assert!(l.state.account(&AccountId::new("a").unwrap()).is_none());
    assert_eq!(before, l.hash());
    l.ok("account a USD book=u limit=100 list=1");
    let before = l.hash();
    assert_eq!(
        invalid_field(&l.run("update a list=0.5 limit=50")),
        "list_price"
    );
    assert_eq!(before, l.hash());
    let v = l.acct("a");
    assert_eq!((v.list_price, v.credit_limit), (amount("1"), amount("100")));
    let o = l.ok("usage a e1 calls 10");
    assert_eq!(
        (settled(&o).debt_created, settled(&o).revenue),
        (amount("10"), amount("10"))
    );
}

/// §5 revenue: promotional draws earn nothing, debt earns its list price, margin is revenue
/// minus cost; the grant that later repays the debt books no second revenue for it.
#[test]
fn margin_of_an_event_partly_promotional_partly_debt() {
    let mut l = L::new();
    l.ok("account a CREDITS book=p limit=100 list=0.5");
    l.ok("grant a promo promotional 3");
    let o = l.ok("usage a e1 calls 10 cost=1");
    let s = settled(&o);
    assert_eq!(s.debt_created, amount("7"));
    assert_eq!(
        (s.revenue, s.cost, s.margin),
        (amount("3.5"), amount("1"), amount("2.5"))
    );
    let r = l.report("a", None);
    assert_eq!(
        (r.revenue, r.cost, r.margin),
        (amount("3.5"), amount("1"), amount("2.5"))
    );
    l.ok("grant a g purchased 10 paid=10"); // repays 7, 3 left at 1 each
    l.ok("usage a e2 calls 3");
    assert_eq!(l.report("a", None).revenue, amount("6.5"));
}

/// §7 "a hold ends exactly once" with closing (a closed account takes no holds, and nothing
/// can be captured on it): closing ends the open holds, released, so they reserve nothing and
/// never expire later (no `hold_expired` on a closed account). Retries of what went through
/// before the close answer what they did: the authorize its hold (expiry as first authorized),
/// the grant AlreadyApplied; new ones are `account_closed`.
#[test]
fn closing_an_account_ends_its_holds_and_retries_still_answer() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 10 paid=10");
    let Outcome::Applied(Applied::HoldAuthorized { expires_at, .. }) = l.ok("authorize a h 4 10m")
    else {
        panic!("authorized")
    };
    l.ok("close a");
    let account = l.acct("a");
    assert_eq!((account.held, account.holds.len()), (amount("0"), 0));
    assert_eq!(account.available, account.balance);
    match l.run("authorize a h 4 10m") {
        Outcome::Applied(Applied::HoldExisted {
            expires_at: again,
            available_after,
        }) => {
            assert_eq!(again, expires_at);
            assert_eq!(available_after, account.available);
        }
        other => panic!("a retried authorize: {other:?}"),
    }
    assert_eq!(code(&l.run("authorize a h2 1 10m")), "account_closed");
    assert_eq!(
        code(&l.run("grant a g purchased 10 paid=10")),
        "already_applied"
    );
    assert_eq!(
        code(&l.run("grant a g2 purchased 1 paid=1")),
        "account_closed"
    );
    // Released by the close, which a release now says (and when).
    let closed_at = l.now;
    match l.run("release a h") {
        Outcome::Applied(Applied::HoldEnded {
            ended_as,
            ended_at,
            available_after,
        }) => {
            assert_eq!(
                (ended_as, ended_at, available_after),
                (HoldEndedAs::Released, closed_at, amount("10"))
            );
        }
        other => panic!("a release after the close: {other:?}"),
    }
    l.drain();
    l.now += 20 * MINUTE;
    l.ok("tick");
    assert_eq!(l.drain(), Vec::<String>::new());
}

/// §7 retries: an authorize retried while the hold is open answers the hold's expiry as first
/// authorized and what is available now (not zero and empty).
#[test]
fn a_retried_authorize_answers_the_holds_expiry() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 10 paid=10");
    let first = l.ok("authorize a h 4 10m");
    l.now += MINUTE;
    l.ok("usage a e1 calls 1");
    let Outcome::Applied(Applied::HoldAuthorized { expires_at, .. }) = first else {
        panic!("{first:?}")
    };
    match l.run("authorize a h 4 10m") {
        Outcome::Applied(Applied::HoldExisted {
            expires_at: again,
            available_after,
        }) => {
            assert_eq!(again, expires_at);
            assert_eq!(available_after, amount("5"));
        }
        other => panic!("{other:?}"),
    }
}

/// Holds on a busy account: tens of thousands kept (ended ones stay for the dedup window)
/// while holds open, are captured, released and expire, several per entry; after every entry
/// the state's invariant checks compare the hold indexes with the holds, and the account's
/// reservations with its open holds.
#[test]
fn many_holds_kept_keep_their_indexes_and_reservations() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 100000 paid=100000");
    for round in 0..300 {
        let lines: Vec<String> = (0..10)
            .flat_map(|k| {
                let i = round * 10 + k;
                let mut lines = vec![format!("authorize a h{i} 5 {}m", 1 + i % 7)];
                match i % 3 {
                    0 => lines.push(format!("usage a e{i} calls 3 hold=h{i}")),
                    1 => lines.push(format!("usage a e{i} calls 5 hold=h{i}")),
                    _ => {}
                }
                if i % 4 == 0 {
                    lines.push(format!("release a h{i}"));
                }
                lines
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        for outcome in l.entry(&refs) {
            assert!(!matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
        }
        l.now += 20_000;
    }
    let open_remaining = l.acct("a").holds.iter().fold(amount("0"), |sum, hold| {
        sum.checked_add(hold.remaining).unwrap()
    });
    assert_eq!(l.acct("a").held, open_remaining);
    assert_eq!(code(&l.run("release a h1")), "already_applied");
    // Every hold ends, and is forgotten after the dedup window, in one tick.
    l.now += 40 * DAY;
    l.ok("tick");
    assert!(l.acct("a").holds.is_empty());
    assert_eq!(code(&l.run("release a h1")), "unknown_hold");
    assert_eq!(code(&l.run("release a h2999")), "unknown_hold");
}

/// §2 "overflow is a rejection": inputs at the edges of what is accepted are refused when
/// applying them later could not be done, instead of panicking on every replica (a crash
/// loop): a purchased grant whose revenue share cannot be computed (`paid` refused as
/// overflow), a capture of a hold that reserves credit into debt whose revenue would leave the
/// range (`overflow`), a grant starting in year 584,556,019 (`starts_at`) or at 0.
#[test]
fn edge_amounts_and_times_are_refused_not_a_panic_later() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    assert_eq!(
        code(&l.run("grant a g purchased 1000000000000000 paid=999999999999999.99 expires=+1h")),
        "overflow"
    );
    // Within range: accepted, and its expiry books its revenue.
    l.ok("grant a g purchased 1000000000000000 paid=10000000000000 expires=+1h");
    l.now += 2 * 60 * MINUTE;
    l.ok("tick");
    assert_eq!(
        l.drain(),
        ["grant_expired:g:1000000000000000", "depleted@0"]
    );

    l.ok("account b CREDITS book=p limit=100000000000000 list=1000000000000000");
    l.ok("authorize b h 100000000000000 1h");
    assert_eq!(
        code(&l.run("usage b e1 calls 100000000000000 hold=h")),
        "overflow"
    );
    assert_eq!(l.acct("b").balance, amount("0"));

    let far = |starts_at: u64| {
        Command::AddGrant(GrantSpec {
            account: AccountId::new("a").unwrap(),
            id: GrantId::new("far").unwrap(),
            category: GrantCategory::Allowance,
            amount: amount("1"),
            priority: None,
            starts_at: Some(starts_at),
            expires_at: None,
            reset_every: Some(ResetPeriod::Month),
            rollover_max: None,
            paid: None,
        })
    };
    for starts_at in [u64::MAX - 1_000, 0] {
        let o = l.apply(vec![far(starts_at)]).remove(0);
        assert_eq!(invalid_field(&o), "starts_at");
    }
}

/// §7 retries: a retried authorize answers what is available after the account's due
/// transitions (its own hold expired meanwhile, without a tick), as a new authorize would.
#[test]
fn a_retried_authorize_answers_what_is_available_after_due_transitions() {
    let mut l = L::new();
    l.ok("account a USD book=u");
    l.ok("grant a g purchased 10 paid=10");
    l.ok("authorize a h 4 1s");
    l.now += 5_000;
    match l.run("authorize a h 4 1s") {
        Outcome::Applied(Applied::HoldExisted {
            available_after, ..
        }) => assert_eq!(available_after, amount("10")),
        other => panic!("{other:?}"),
    }
}
