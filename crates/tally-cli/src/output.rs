//! How results reach the terminal: one JSON object per command with `--json`, otherwise
//! aligned key/value blocks and tables; errors with their stable code.

use std::io::Write;

use serde_json::Value;
use tally_client::ClientError;

/// Exit status: refused by the ledger (a business rejection, an unknown id...).
pub const EXIT_REFUSED: u8 = 1;
/// Exit status: bad command line or a bad value (nothing was sent).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the cluster could not be reached or the outcome is unknown; retry.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// A failed command: the stable code, a sentence, and machine-readable details.
#[derive(Debug)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub details: serde_json::Map<String, Value>,
    pub exit: u8,
}

impl Failure {
    /// A bad value caught before any request; `flag` names what the user typed.
    pub fn usage(flag: &str, reason: impl std::fmt::Display) -> Failure {
        let mut details = serde_json::Map::new();
        details.insert("field".into(), Value::String(flag.to_string()));
        details.insert("reason".into(), Value::String(reason.to_string()));
        Failure {
            code: "invalid_argument".into(),
            message: format!("{flag}: {reason}"),
            details,
            exit: EXIT_USAGE,
        }
    }

    /// Something the ledger refused (business code), exit 1.
    pub fn refused(code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: code.to_string(),
            message: message.into(),
            details: serde_json::Map::new(),
            exit: EXIT_REFUSED,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let exit = if error.is_transient() || error.outcome_unknown() {
            // The command may have been applied: "try again", never "refused".
            EXIT_UNAVAILABLE
        } else if error.is_local() {
            // Caught by the client's own checks: nothing was sent, as for a bad flag.
            EXIT_USAGE
        } else {
            EXIT_REFUSED
        };
        let mut message = error.message();
        if error.is_transient() {
            // Not "the cluster may be down": a node's own reason (a learner still catching up)
            // is transient too, and the message above says which it was.
            message.push_str(" (a transient failure: retrying the same command is safe)");
        }
        Failure {
            code: error.code().as_str().to_string(),
            message,
            details: error
                .details()
                .into_iter()
                .map(|(key, value)| (key, Value::String(value)))
                .collect(),
            exit,
        }
    }
}

/// Where a command writes.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as one compact JSON line.
    pub fn json(&self, value: &Value) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{value}");
        let _ = stdout.flush();
    }

    /// Prints the failure: JSON `{"error": {...}}` on stdout with `--json`, else a line on
    /// stderr such as `error: insufficient_funds: ...`.
    pub fn failure(&self, failure: &Failure) {
        if self.json {
            self.json(&serde_json::json!({
                "error": {
                    "code": failure.code,
                    "message": failure.message,
                    "details": failure.details,
                }
            }));
        } else {
            eprintln!("error: {}: {}", failure.code, failure.message);
            for (key, value) in &failure.details {
                if key == "field" || key == "reason" {
                    continue;
                }
                let value = value
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(value.to_string());
                eprintln!("  {key}: {value}");
            }
        }
    }
}

/// `key  value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in pairs {
        text.push_str(&format!("{key:<width$}  {value}\n"));
    }
    text
}

/// A table with a header row; columns as wide as their widest cell.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(String::len).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate() {
                if index < widths.len() {
                    widths[index] = widths[index].max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::new();
            for (index, cell) in cells.iter().enumerate() {
                let width = widths.get(index).copied().unwrap_or(0);
                if index + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<width$}  "));
                }
            }
            text.trim_end().to_string() + "\n"
        };
        let mut text = line(&self.headers);
        for row in &self.rows {
            text.push_str(&line(row));
        }
        text
    }
}

/// RFC 3339 text of a time in ms, or `-`.
pub fn time_text(ms: Option<u64>) -> String {
    ms.map(tally_core::format_utc)
        .unwrap_or_else(|| "-".to_string())
}

/// RFC 3339 JSON string of a time in ms, or null.
pub fn time_json(ms: Option<u64>) -> Value {
    ms.map(|ms| Value::String(tally_core::format_utc(ms)))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut table = Table::new(&["id", "remaining"]);
        table.row(vec!["monthly".into(), "10000".into()]);
        table.row(vec!["x".into(), "5".into()]);
        assert_eq!(
            table.render(),
            "id       remaining\nmonthly  10000\nx        5\n"
        );
        assert_eq!(
            key_values(&[("a", "1".into()), ("long", "2".into())]),
            "a     1\nlong  2\n"
        );
    }
}
