//! Data-driven scenarios: each `.scn` file under `tests/scenarios/` is a table of commands,
//! expected outcomes, balances and report figures. See `tests/scenarios/README.md`.

mod support;

use std::path::Path;
use support::{amount, commands, time, Words};
use tally_core::*;

struct Runner {
    name: String,
    state: LedgerState,
    now: u64,
    emitted: Vec<LedgerEvent>,
    journal: Vec<JournalEntry>,
}

impl Runner {
    fn new(name: &str) -> Self {
        Runner {
            name: name.to_string(),
            state: LedgerState::new(),
            now: parse_utc("2026-01-01T00:00:00Z").unwrap(),
            emitted: Vec::new(),
            journal: Vec::new(),
        }
    }

    fn fail(&self, line_no: usize, line: &str, why: String) -> ! {
        panic!("scenario {:?}, line {line_no}: {line}\n  {why}", self.name);
    }

    fn step(&mut self, line_no: usize, line: &str) {
        let words = Words::new(line);
        match words.positional[0] {
            "time" => {
                self.now = time(words.positional[1], self.now);
                return;
            }
            "expect" => return self.expect(line_no, line, &words),
            _ => {}
        }
        let (command_text, expectation) = match line.split_once("=>") {
            Some((c, e)) => (c.trim(), Some(e.trim())),
            None => (line, None),
        };
        let entry = Entry {
            at_ms: self.now,
            commands: commands(command_text, self.now),
        };
        let result = self.state.apply(&entry);
        if let Err(broken) = self.state.check_invariants() {
            self.fail(line_no, line, format!("invariant broken: {broken}"));
        }
        for journal in &result.journal {
            let mut sum = Amount::ZERO;
            for posting in &journal.postings {
                sum = sum.checked_add(posting.amount).unwrap();
            }
            if !sum.is_zero() {
                self.fail(
                    line_no,
                    line,
                    format!("unbalanced journal entry {journal:?}"),
                );
            }
        }
        self.emitted.extend(result.events.iter().cloned());
        self.journal.extend(result.journal.iter().cloned());
        if let Some(expectation) = expectation {
            for outcome in &result.outcomes {
                if let Err(why) = check_outcome(outcome, expectation) {
                    self.fail(line_no, line, format!("{why}\n  outcome: {outcome:#?}"));
                }
            }
        } else {
            // A command without `=>` must not be rejected: typos in scenarios fail loudly.
            for outcome in &result.outcomes {
                if matches!(outcome, Outcome::Rejected(_) | Outcome::Conflict { .. }) {
                    self.fail(line_no, line, format!("unexpected outcome {outcome:#?}"));
                }
            }
        }
    }

    fn expect(&mut self, line_no: usize, line: &str, words: &Words<'_>) {
        let what = words.positional[1];
        let result = match what {
            "account" => {
                let id = AccountId::new(words.positional[2]).unwrap();
                match self.state.account(&id) {
                    None => Err(format!("no account {id}")),
                    Some(view) => check_account(&view, words),
                }
            }
            "report" => {
                let account = match words.positional[2] {
                    "*" => None,
                    id => Some(AccountId::new(id).unwrap()),
                };
                let month = words.get("month").map(|m| parse_month(m).expect("YYYY-MM"));
                match self.state.report(account.as_ref(), month) {
                    None => Err("no report".to_string()),
                    Some(view) => check_report(&view, words),
                }
            }
            "emitted" => {
                let kinds: Vec<String> = self
                    .emitted
                    .drain(..)
                    .map(|e| match &e.kind {
                        LedgerEventKind::BalanceLow { threshold, .. } => {
                            format!("balance_low:{threshold}")
                        }
                        LedgerEventKind::BalanceRecovered { threshold, .. } => {
                            format!("balance_recovered:{threshold}")
                        }
                        LedgerEventKind::GrantExpired { grant, expired } => {
                            format!("grant_expired:{grant}:{expired}")
                        }
                        LedgerEventKind::HoldExpired { hold, released } => {
                            format!("hold_expired:{hold}:{released}")
                        }
                        LedgerEventKind::RechargeRequested { amount, .. } => {
                            format!("recharge_requested:{amount}")
                        }
                        other => other.name().to_string(),
                    })
                    .collect();
                let wanted = words.positional[2];
                let got = if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(",")
                };
                if got == wanted {
                    Ok(())
                } else {
                    Err(format!("emitted {got}, expected {wanted}"))
                }
            }
            "journal" => {
                // expect journal KIND... : the kinds journaled since the last check.
                let kinds: Vec<&str> = self.journal.iter().map(|j| j.kind.name()).collect();
                let got = if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(",")
                };
                self.journal.clear();
                if got == words.positional[2] {
                    Ok(())
                } else {
                    Err(format!("journaled {got}, expected {}", words.positional[2]))
                }
            }
            other => panic!("unknown expectation {other}"),
        };
        if let Err(why) = result {
            self.fail(line_no, line, why);
        }
    }
}

fn eq_amount(field: &str, got: Amount, wanted: &str) -> Result<(), String> {
    if got == amount(wanted) {
        Ok(())
    } else {
        Err(format!("{field} is {got}, expected {wanted}"))
    }
}

fn check_account(view: &AccountView, words: &Words<'_>) -> Result<(), String> {
    for (key, wanted) in &words.options {
        match *key {
            "balance" => eq_amount(key, view.balance, wanted)?,
            "available" => eq_amount(key, view.available, wanted)?,
            "held" => eq_amount(key, view.held, wanted)?,
            "debt" => eq_amount(key, view.debt, wanted)?,
            "status" => {
                if view.status.as_str() != *wanted {
                    return Err(format!(
                        "status is {}, expected {wanted}",
                        view.status.as_str()
                    ));
                }
            }
            "order" => {
                let live: Vec<&str> = view
                    .grants
                    .iter()
                    .filter(|g| g.state == "live")
                    .map(|g| g.id.as_str())
                    .collect();
                if live.join(",") != *wanted {
                    return Err(format!(
                        "drawdown order is {}, expected {wanted}",
                        live.join(",")
                    ));
                }
            }
            grant_key if grant_key.starts_with("grant.") => {
                let id = &grant_key[6..];
                let grant = view
                    .grants
                    .iter()
                    .find(|g| g.id.as_str() == id)
                    .ok_or(format!("no grant {id}"))?;
                match wanted.split_once('/') {
                    Some((remaining, state)) => {
                        eq_amount(grant_key, grant.remaining, remaining)?;
                        if grant.state != state {
                            return Err(format!(
                                "{grant_key} is {}, expected {state}",
                                grant.state
                            ));
                        }
                    }
                    None => eq_amount(grant_key, grant.remaining, wanted)?,
                }
            }
            other => return Err(format!("unknown account field {other}")),
        }
    }
    Ok(())
}

fn check_report(view: &ReportView, words: &Words<'_>) -> Result<(), String> {
    for (key, wanted) in &words.options {
        match *key {
            "month" => {}
            "revenue" => eq_amount(key, view.revenue, wanted)?,
            "cost" => eq_amount(key, view.cost, wanted)?,
            "margin" => eq_amount(key, view.margin, wanted)?,
            "breakage" => eq_amount(key, view.breakage, wanted)?,
            "events" => {
                if view.events.to_string() != *wanted {
                    return Err(format!("events is {}, expected {wanted}", view.events));
                }
            }
            "charged" => {
                let total = view
                    .charged
                    .iter()
                    .fold(Amount::ZERO, |acc, (_, a)| acc.checked_add(*a).unwrap());
                eq_amount(key, total, wanted)?
            }
            granted if granted.starts_with("granted.") => {
                let category = &granted[8..];
                let total = view
                    .granted
                    .iter()
                    .filter(|(c, _, _)| c.as_str() == category)
                    .fold(Amount::ZERO, |acc, (_, _, a)| acc.checked_add(*a).unwrap());
                eq_amount(key, total, wanted)?
            }
            meter_key if meter_key.starts_with("meter.") => {
                let (meter, field) = meter_key[6..].split_once('.').expect("meter.NAME.field");
                let m = view
                    .meters
                    .iter()
                    .find(|m| m.meter.as_str() == meter)
                    .ok_or(format!("no meter {meter} in report"))?;
                match field {
                    "quantity" => eq_amount(key, m.quantity, wanted)?,
                    "charged" => eq_amount(key, m.charged, wanted)?,
                    "revenue" => eq_amount(key, m.revenue, wanted)?,
                    "cost" => eq_amount(key, m.cost, wanted)?,
                    "margin" => eq_amount(key, m.margin, wanted)?,
                    "events" => {
                        if m.events.to_string() != *wanted {
                            return Err(format!("{key} is {}, expected {wanted}", m.events));
                        }
                    }
                    other => return Err(format!("unknown meter field {other}")),
                }
            }
            other => return Err(format!("unknown report field {other}")),
        }
    }
    Ok(())
}

fn check_outcome(outcome: &Outcome, expectation: &str) -> Result<(), String> {
    let words = Words::new(expectation);
    let kind = words.positional[0];
    if kind == "batch" {
        let Outcome::Batch(outcomes) = outcome else {
            return Err(format!("expected a batch, got {}", outcome.kind()));
        };
        let got: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Rejected(r) => format!("rejected:{}", r.code()),
                other => other.kind().to_string(),
            })
            .collect();
        return if got.join(",") == words.positional[1] {
            Ok(())
        } else {
            Err(format!(
                "batch outcomes {}, expected {}",
                got.join(","),
                words.positional[1]
            ))
        };
    }
    if outcome.kind() != kind {
        return Err(format!("outcome is {}, expected {kind}", outcome.kind()));
    }
    if let Outcome::Rejected(rejection) = outcome {
        if let Some(code) = words.positional.get(1) {
            if rejection.code() != *code {
                return Err(format!(
                    "rejected with {}, expected {code}",
                    rejection.code()
                ));
            }
        }
        for (key, wanted) in &words.options {
            match (key, &rejection.reason) {
                (&"available", Reason::InsufficientFunds { available, .. }) => {
                    eq_amount(key, *available, wanted)?
                }
                (&"required", Reason::InsufficientFunds { required, .. }) => {
                    eq_amount(key, *required, wanted)?
                }
                (&"field", Reason::InvalidInput(error)) => {
                    if error.field != *wanted {
                        return Err(format!("field is {}, expected {wanted}", error.field));
                    }
                }
                _ => return Err(format!("cannot check {key} on {:?}", rejection.reason)),
            }
        }
        return Ok(());
    }
    if let Outcome::Applied(applied) = outcome {
        for (key, wanted) in &words.options {
            match (key, applied) {
                (&"debt_repaid", Applied::GrantAdded { debt_repaid, .. }) => {
                    eq_amount(key, *debt_repaid, wanted)?
                }
                (&"balance", Applied::GrantAdded { balance_after, .. })
                | (&"balance", Applied::GrantVoided { balance_after, .. })
                | (&"balance", Applied::GrantEnded { balance_after, .. }) => {
                    eq_amount(key, *balance_after, wanted)?
                }
                (&"ended", Applied::GrantEnded { ended_as, .. }) => {
                    if ended_as.as_str() != *wanted {
                        return Err(format!("ended {}, expected {wanted}", ended_as.as_str()));
                    }
                }
                (&"voided", Applied::GrantVoided { voided, .. }) => {
                    eq_amount(key, *voided, wanted)?
                }
                (&"released", Applied::HoldReleased { released, .. }) => {
                    eq_amount(key, *released, wanted)?
                }
                (&"version", Applied::PricesPublished { version, .. }) => {
                    if version.to_string() != *wanted {
                        return Err(format!("version is {version}, expected {wanted}"));
                    }
                }
                (&"as", applied) => {
                    let name = format!("{applied:?}");
                    if !name.starts_with(wanted) {
                        return Err(format!("applied {name}, expected {wanted}"));
                    }
                }
                _ => return Err(format!("cannot check {key} on {applied:?}")),
            }
        }
        return Ok(());
    }
    if let Some(settlement) = outcome.settlement() {
        for (key, wanted) in &words.options {
            match *key {
                "charged" => eq_amount(key, settlement.charged, wanted)?,
                "balance" => eq_amount(key, settlement.balance_after, wanted)?,
                "revenue" => eq_amount(key, settlement.revenue, wanted)?,
                "cost" => eq_amount(key, settlement.cost, wanted)?,
                "margin" => eq_amount(key, settlement.margin, wanted)?,
                "debt" => eq_amount(key, settlement.debt_created, wanted)?,
                "hold" => eq_amount(key, settlement.from_hold, wanted)?,
                "version" => {
                    if settlement.price_version.to_string() != *wanted {
                        return Err(format!(
                            "price version is {}, expected {wanted}",
                            settlement.price_version
                        ));
                    }
                }
                "draws" => {
                    let got: Vec<String> = settlement
                        .drawdown
                        .iter()
                        .map(|d| format!("{}:{}", d.grant, d.amount))
                        .collect();
                    let got = if got.is_empty() {
                        "none".to_string()
                    } else {
                        got.join(",")
                    };
                    if got != *wanted {
                        return Err(format!("drawdown is {got}, expected {wanted}"));
                    }
                }
                other => return Err(format!("unknown settlement field {other}")),
            }
        }
    }
    Ok(())
}

fn run_file(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let mut runner: Option<Runner> = None;
    let mut count = 0;
    let finish = |runner: Option<Runner>| {
        if let Some(runner) = runner {
            // Every scenario's final state survives a snapshot round trip, hash for hash.
            let bytes = runner.state.encode_snapshot();
            let decoded = LedgerState::decode_snapshot(&bytes).unwrap();
            assert_eq!(
                decoded.state_hash(),
                runner.state.state_hash(),
                "{}",
                runner.name
            );
            assert_eq!(decoded, runner.state, "{}", runner.name);
        }
    };
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("scenario ") {
            finish(runner.take());
            runner = Some(Runner::new(name));
            count += 1;
            continue;
        }
        runner
            .as_mut()
            .expect("a scenario line first")
            .step(index + 1, line);
    }
    finish(runner);
    count
}

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    files.sort();
    let mut total = 0;
    for file in &files {
        total += run_file(file);
    }
    println!("{total} scenarios passed");
    assert!(total >= 30, "expected at least 30 scenarios, found {total}");
}
