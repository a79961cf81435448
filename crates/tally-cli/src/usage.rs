//! `tally usage record` and `tally usage import FILE.jsonl` (batched, with progress on stderr).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tally_client::{
    new_event_id, v1, Client, ClientError, EventOutcome, UsageBatcher, UsageOutcome,
};
use tally_proto::ToCommand;

use crate::args::UsageRecordArgs;
use crate::ledger::CommandResult;
use crate::output::{key_values, Failure, Output, EXIT_REFUSED};
use crate::values::parse_time;
use crate::views;

/// Most events one import reads (they are validated before the first is sent).
const IMPORT_EVENTS_MAX: usize = 10_000_000;
/// Rejections listed in the import summary (all are counted).
const IMPORT_REJECTIONS_LISTED_MAX: usize = 20;
/// Least time between two progress updates.
const PROGRESS_INTERVAL_MS: u64 = 500;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn pairs(dims: impl IntoIterator<Item = (String, String)>) -> Vec<v1::KeyValue> {
    dims.into_iter()
        .map(|(key, value)| v1::KeyValue { key, value })
        .collect()
}

pub async fn record(client: &Client, out: Output, args: UsageRecordArgs) -> CommandResult {
    let generated = args.event_id.is_none();
    let event_id = args.event_id.clone().unwrap_or_else(new_event_id);
    let occurred_at_ms = args.occurred_at.unwrap_or_else(now_ms);
    let event = v1::UsageEvent {
        event_id: event_id.clone(),
        account: args.account.clone(),
        meter: args.meter.clone(),
        quantity: args.quantity.clone(),
        dimensions: pairs(args.dims.clone()),
        occurred_at_ms,
        cost: args.cost.clone(),
        hold_id: args.hold.clone(),
    };
    if (generated || args.occurred_at.is_none()) && !out.json {
        // Printed first so that a person can retry the very same event if the answer is lost:
        // the id and the time are both part of it (another time would be a conflict).
        let occurred_at = tally_core::format_utc(occurred_at_ms);
        eprintln!("to retry this event: --event-id {event_id} --occurred-at {occurred_at}");
    }
    let outcome = match client.record_usage(event).await {
        Ok(outcome) => outcome,
        Err(error) => {
            let transient = error.is_transient();
            let message = error.message();
            let occurred_at = tally_core::format_utc(occurred_at_ms);
            let mut failure = Failure::from(error);
            // The event as sent, so a script can retry the very same one (`--json` too).
            failure
                .details
                .insert("event_id".into(), json!(event_id.clone()));
            failure
                .details
                .insert("occurred_at".into(), json!(occurred_at.clone()));
            if transient && (generated || args.occurred_at.is_none()) {
                // Running the same command again would record a new event (a new id or
                // time): the retry must name this one.
                failure.message = format!(
                    "{message} (the outcome is unknown: retry this event with --event-id {event_id} --occurred-at {occurred_at}; the same command without them records a new event)"
                );
            }
            return Err(failure);
        }
    };
    if out.json {
        let mut value = views::usage_json(&event_id, &outcome);
        value["event_id_generated"] = json!(generated);
        value["occurred_at"] = json!(tally_core::format_utc(occurred_at_ms));
        out.json(&value);
    } else {
        print!("{}", views::usage_text(&event_id, &outcome));
    }
    Ok(match outcome {
        UsageOutcome::Settled(_) | UsageOutcome::Duplicate(_) => 0,
        UsageOutcome::Conflict { .. } | UsageOutcome::Rejected(_) => EXIT_REFUSED,
    })
}

/// One line of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    event_id: Option<String>,
    account: String,
    meter: String,
    quantity: String,
    #[serde(default, deserialize_with = "crate::values::unique_keys")]
    dimensions: BTreeMap<String, String>,
    occurred_at: Option<String>,
    occurred_at_ms: Option<u64>,
    cost: Option<String>,
    hold: Option<String>,
}

/// An event id derived from the line's number and text: importing the same file twice is a
/// no-op, while two identical lines are still two events.
fn line_event_id(number: usize, line: &str) -> String {
    let digest = Sha256::digest(format!("{number}:{}", line.trim()).as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("imp-{hex}")
}

fn parse_line(
    number: usize,
    line: &str,
    default_occurred_at_ms: u64,
) -> Result<v1::UsageEvent, String> {
    let parsed: ImportLine = serde_json::from_str(line).map_err(|error| {
        let hint = if error.to_string().contains("expected a string") {
            " (quantity and cost are decimal strings such as \"12.5\")"
        } else {
            ""
        };
        format!("{error}{hint}")
    })?;
    let occurred_at_ms = match (&parsed.occurred_at, parsed.occurred_at_ms) {
        (Some(_), Some(_)) => return Err("give occurred_at or occurred_at_ms, not both".into()),
        (Some(text), None) => {
            parse_time(text).map_err(|reason| format!("occurred_at: {reason}"))?
        }
        (None, Some(ms)) => ms,
        (None, None) => default_occurred_at_ms,
    };
    let event = v1::UsageEvent {
        event_id: parsed
            .event_id
            .unwrap_or_else(|| line_event_id(number, line)),
        account: parsed.account,
        meter: parsed.meter,
        quantity: parsed.quantity,
        dimensions: pairs(parsed.dimensions),
        occurred_at_ms,
        cost: parsed.cost,
        hold_id: parsed.hold,
    };
    // The same checks the server makes, so a bad line stops the import before anything is sent.
    v1::RecordUsageRequest {
        event: Some(event.clone()),
    }
    .to_command()
    .map_err(|error| error.message)?;
    Ok(event)
}

fn read_events(path: &Path) -> Result<Vec<(usize, v1::UsageEvent)>, Failure> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|error| Failure::usage("FILE", format!("cannot open {shown}: {error}")))?;
    let default_occurred_at_ms = now_ms();
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line =
            line.map_err(|error| Failure::usage("FILE", format!("{shown}:{number}: {error}")))?;
        if line.trim().is_empty() {
            continue;
        }
        if events.len() >= IMPORT_EVENTS_MAX {
            return Err(Failure::usage(
                "FILE",
                format!("{shown} has more than {IMPORT_EVENTS_MAX} events; split it"),
            ));
        }
        match parse_line(number, &line, default_occurred_at_ms) {
            Ok(event) => events.push((number, event)),
            Err(reason) => bad.push(format!("{shown}:{number}: {reason}")),
        }
    }
    if !bad.is_empty() {
        let shown_lines: Vec<String> = bad.iter().take(5).cloned().collect();
        let more = if bad.len() > 5 {
            format!("\n  ... and {} more bad lines", bad.len() - 5)
        } else {
            String::new()
        };
        return Err(Failure::usage(
            "FILE",
            format!(
                "{} bad lines; nothing was sent:\n  {}{more}",
                bad.len(),
                shown_lines.join("\n  ")
            ),
        ));
    }
    if events.is_empty() {
        return Err(Failure::usage("FILE", format!("{shown} has no events")));
    }
    Ok(events)
}

#[derive(Default)]
struct Tally {
    settled: u64,
    duplicate: u64,
    conflict: u64,
    rejected: u64,
}

impl Tally {
    fn done(&self) -> u64 {
        self.settled + self.duplicate + self.conflict + self.rejected
    }
}

struct Progress {
    total: usize,
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
}

impl Progress {
    fn show(&mut self, tally: &Tally, last_update: bool) {
        let now = Instant::now();
        if !last_update {
            if let Some(last) = self.last {
                if now.duration_since(last) < Duration::from_millis(PROGRESS_INTERVAL_MS) {
                    return;
                }
            }
        }
        self.last = Some(now);
        let done = tally.done();
        let width = 30usize;
        let filled = (done as usize * width)
            .checked_div(self.total)
            .unwrap_or(width)
            .min(width);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "[{}{}] {done}/{} events, {:.0}/s  settled {} duplicate {} conflict {} rejected {}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.total,
            done as f64 / seconds,
            tally.settled,
            tally.duplicate,
            tally.conflict,
            tally.rejected
        );
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r{line}");
            if last_update {
                let _ = writeln!(stderr);
            }
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
}

/// How `usage import` batches: events and request bytes per batch, all-or-nothing batches,
/// batches in flight.
pub struct Batches {
    pub events_max: usize,
    pub bytes_max: usize,
    pub atomic: bool,
    pub in_flight: usize,
}

pub async fn import(client: &Client, out: Output, path: &Path, batches: Batches) -> CommandResult {
    let Batches {
        events_max: batch,
        bytes_max,
        atomic,
        in_flight,
    } = batches;
    let events = read_events(path)?;
    let total = events.len();
    let mut tally = Tally::default();
    let mut rejections = Vec::new();
    let mut progress = Progress {
        total,
        started: Instant::now(),
        last: None,
        terminal: std::io::stderr().is_terminal(),
    };
    let mut batcher = UsageBatcher::new(client.clone(), batch, atomic)
        .with_in_flight(in_flight)
        .with_batch_bytes_max(bytes_max);
    // Outcomes come back in push order, so the n-th outcome is the n-th event of the file.
    let mut answered = 0usize;
    let mut record = |outcomes: Vec<EventOutcome>, tally: &mut Tally| {
        for outcome in outcomes {
            let line = events.get(answered).map(|(line, _)| *line).unwrap_or(0);
            answered += 1;
            match &outcome.outcome {
                UsageOutcome::Settled(_) => tally.settled += 1,
                UsageOutcome::Duplicate(_) => tally.duplicate += 1,
                UsageOutcome::Conflict { .. } => tally.conflict += 1,
                UsageOutcome::Rejected(_) => tally.rejected += 1,
            }
            if matches!(
                outcome.outcome,
                UsageOutcome::Conflict { .. } | UsageOutcome::Rejected(_)
            ) && rejections.len() < IMPORT_REJECTIONS_LISTED_MAX
            {
                let mut value = views::usage_json(&outcome.event_id, &outcome.outcome);
                value["line"] = json!(line);
                rejections.push(value);
            }
        }
    };
    let stopped = |error: ClientError, line: usize, tally: &Tally| {
        let mut failure = Failure::from(error);
        failure.message = format!(
            "{} (stopped near line {line}; {} of {total} events answered; importing the file again is safe)",
            failure.message,
            tally.done()
        );
        failure
    };
    for (line, event) in &events {
        match batcher.push(event.clone()).await {
            Ok(outcomes) => record(outcomes, &mut tally),
            Err(error) => {
                progress.show(&tally, true);
                return Err(stopped(error, *line, &tally));
            }
        }
        progress.show(&tally, false);
    }
    match batcher.flush().await {
        Ok(outcomes) => record(outcomes, &mut tally),
        Err(error) => {
            progress.show(&tally, true);
            let line = events.last().map(|(line, _)| *line).unwrap_or(0);
            return Err(stopped(error, line, &tally));
        }
    }
    progress.show(&tally, true);
    let seconds = progress.started.elapsed().as_secs_f64();
    let batches = batcher.batches_sent();
    if out.json {
        out.json(&json!({
            "file": path.display().to_string(),
            "events": total,
            "batches": batches,
            "atomic": atomic,
            "settled": tally.settled,
            "duplicate": tally.duplicate,
            "conflict": tally.conflict,
            "rejected": tally.rejected,
            "seconds": format!("{seconds:.3}"),
            "rejections": rejections,
        }));
    } else {
        print!(
            "{}",
            key_values(&[
                ("file", path.display().to_string()),
                ("events", total.to_string()),
                ("batches", batches.to_string()),
                ("settled", tally.settled.to_string()),
                ("duplicate", tally.duplicate.to_string()),
                ("conflict", tally.conflict.to_string()),
                ("rejected", tally.rejected.to_string()),
                ("seconds", format!("{seconds:.3}")),
            ])
        );
        for rejection in &rejections {
            println!(
                "line {}: {} {}: {}",
                rejection["line"],
                rejection["event_id"].as_str().unwrap_or(""),
                rejection["reason"].as_str().unwrap_or(""),
                rejection["message"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if tally.conflict + tally.rejected > 0 {
        EXIT_REFUSED
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines() {
        let line = r#"{"account": "acme", "meter": "tokens", "quantity": "12", "dimensions": {"model": "m1"}, "occurred_at": "2026-01-31T12:00:00Z"}"#;
        let event = parse_line(1, line, 1).unwrap();
        assert_eq!(event.event_id, line_event_id(1, line));
        // The same text on another line is another event.
        assert_ne!(event.event_id, parse_line(2, line, 1).unwrap().event_id);
        assert_eq!(event.event_id, parse_line(1, line, 1).unwrap().event_id);
        assert!(event.event_id.len() <= 128);
        assert_eq!(event.dimensions[0].key, "model");
        assert_eq!(
            event.occurred_at_ms,
            parse_time("2026-01-31T12:00:00Z").unwrap()
        );

        let with_id = parse_line(
            1,
            r#"{"event_id": "e-1", "account": "acme", "meter": "tokens", "quantity": "1", "occurred_at_ms": 5}"#,
            1,
        )
        .unwrap();
        assert_eq!(with_id.event_id, "e-1");
        assert_eq!(with_id.occurred_at_ms, 5);
        assert_eq!(
            parse_line(
                1,
                r#"{"account": "acme", "meter": "tokens", "quantity": "1"}"#,
                77
            )
            .unwrap()
            .occurred_at_ms,
            77
        );

        let error = parse_line(
            1,
            r#"{"account": "acme", "meter": "tokens", "quantity": 1}"#,
            1,
        )
        .unwrap_err();
        assert!(error.contains("decimal strings"), "{error}");
        let error = parse_line(
            1,
            r#"{"account": "acme", "meter": "tokens", "quantity": "-1"}"#,
            1,
        )
        .unwrap_err();
        assert!(error.contains("quantity"), "{error}");
        let error = parse_line(
            1,
            r#"{"account": "a b", "meter": "tokens", "quantity": "1"}"#,
            1,
        )
        .unwrap_err();
        assert!(error.contains("account"), "{error}");
        let error = parse_line(
            1,
            r#"{"account": "a", "meter": "tokens", "quantity": "1", "occurred_at": "yesterday"}"#,
            1,
        )
        .unwrap_err();
        assert!(error.contains("occurred_at"), "{error}");
        // A repeated dimension key is refused (serde_json would keep the last one).
        for dims in [
            r#"{"model": "large", "model": "small"}"#,
            r#"{"model": "small", "model": "large"}"#,
        ] {
            let line = format!(
                r#"{{"account": "a", "meter": "t", "quantity": "1", "dimensions": {dims}}}"#
            );
            let error = parse_line(1, &line, 1).unwrap_err();
            assert!(
                error.contains(r#"key "model" appears more than once"#),
                "{error}"
            );
        }
        assert!(parse_line(
            1,
            r#"{"account": "a", "meter": "t", "quantity": "1", "x": 1}"#,
            1
        )
        .is_err());
    }
}
