//! The real `tally` binary against a real local cluster of `tallyd` processes: every command in
//! human and `--json` form, bad flags and values refused before any request, and a usage event
//! retried through a different node (after its first node died) settled exactly once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{free_ports, Cluster, ClusterSpec};

static TALLY: OnceLock<PathBuf> = OnceLock::new();

/// The `tally` binary, built once with this test's profile (`$TALLY_BIN` overrides).
fn tally_binary() -> PathBuf {
    TALLY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("TALLY_BIN") {
                return PathBuf::from(path);
            }
            // The test executable lives in target/<profile>/deps/; binaries in target/<profile>/.
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>")
                .to_path_buf();
            let release = profile_dir
                .file_name()
                .is_some_and(|name| name == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "tally-cli", "--bin", "tally"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("running cargo build for tally");
            assert!(
                status.success(),
                "cargo build -p tally-cli --bin tally failed"
            );
            let path = profile_dir.join("tally");
            assert!(path.exists(), "{} missing after the build", path.display());
            path
        })
        .clone()
}

struct Run {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "tally {:?} failed:\n{}\n{}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "tally {:?}: expected exit {code}:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// The one JSON object a `--json` command prints.
    fn json(&self) -> Value {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "tally {:?}: expected one JSON line, got:\n{}",
            self.args,
            self.stdout
        );
        serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("tally {:?}: not JSON ({e}): {}", self.args, lines[0]))
    }

    /// Whether stdout contains `text`, runs of spaces counting as one (tables align columns).
    fn has(self, text: &str) -> Run {
        assert!(
            collapse(&self.stdout).contains(&collapse(text)),
            "tally {:?}: stdout lacks {text:?}:\n{}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    fn err_has(self, text: &str) -> Run {
        assert!(
            self.stderr.contains(text),
            "tally {:?}: stderr lacks {text:?}:\n{}",
            self.args,
            self.stderr
        );
        self
    }
}

fn collapse(text: &str) -> String {
    text.split(' ')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn endpoint_args(endpoints: &[String]) -> Vec<String> {
    endpoints
        .iter()
        .flat_map(|e| ["--endpoint".to_string(), e.clone()])
        .collect()
}

fn tally(endpoints: &[String], args: &[&str]) -> Run {
    let mut all = endpoint_args(endpoints);
    all.extend(args.iter().map(|a| a.to_string()));
    let output = Command::new(tally_binary())
        .args(&all)
        .env_remove("TALLY_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .expect("running tally");
    Run {
        args: all,
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn all_endpoints(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes
        .values()
        .map(|node| node.addrs.client.clone())
        .collect()
}

fn s<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {value}"))
}

/// Written in the form `price show --json` prints back (every field explicit).
const RATES: &str = r#"{"rates": [
  {"meter": "tokens", "match": {"model": "small"}, "per_unit": {"unit_price": "0.002", "per": "1"}},
  {"meter": "tokens", "match": {"model": "large"}, "per_unit": {"unit_price": "0.01", "per": "1"}},
  {"meter": "images", "match": {}, "package": {"size": "10", "price": "1.5"}},
  {"meter": "storage", "match": {}, "graduated": {"tiers": [{"up_to": "100", "unit_price": "1"}, {"up_to": null, "unit_price": "0.5"}], "per": "1"}},
  {"meter": "calls", "match": {}, "flat": {"amount": "0.1"}}
]}"#;

/// Rates in a canonical order, to compare what was published with what is shown.
fn sorted_rates(rates: &Value) -> Vec<String> {
    let mut texts: Vec<String> = rates
        .as_array()
        .expect("rates array")
        .iter()
        .map(Value::to_string)
        .collect();
    texts.sort();
    texts
}

#[tokio::test]
async fn every_command_in_human_and_json_form() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    let all = all_endpoints(&cluster);
    let e = all.as_slice();
    let dir = cluster.dir().to_path_buf();
    let rates_path = dir.join("rates.json");
    std::fs::write(&rates_path, RATES).unwrap();
    let rates = rates_path.to_str().unwrap();

    // Assets.
    tally(e, &["asset", "create", "CREDITS", "--scale", "4"])
        .ok()
        .has("created asset CREDITS");
    let json = tally(e, &["--json", "asset", "create", "CREDITS", "--scale", "4"])
        .ok()
        .json();
    assert_eq!(json["already_existed"], true);
    tally(e, &["asset", "list"]).ok().has("CREDITS").has("USD");
    let json = tally(e, &["--json", "asset", "list"]).ok().json();
    assert!(json["assets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["code"] == "CREDITS" && a["scale"] == 4));

    // Prices: publish twice (human, json), show both ways; the JSON mirrors the rates file.
    tally(
        e,
        &[
            "price", "publish", "llm", "--asset", "CREDITS", "--file", rates,
        ],
    )
    .ok()
    .has("published llm version 1");
    let json = tally(
        e,
        &[
            "--json", "price", "publish", "llm", "--asset", "CREDITS", "--file", rates,
        ],
    )
    .ok()
    .json();
    assert_eq!(json["version"], 2);
    // Two rates of one meter that can match the same event: refused, named as the file names
    // them (`match`, the wire's `dimensions`).
    let ambiguous = std::path::Path::new(rates).with_file_name("ambiguous.json");
    std::fs::write(
        &ambiguous,
        r#"{"rates": [{"meter": "t", "match": {"model": "a"}, "per_unit": {"unit_price": "1"}},
                      {"meter": "t", "match": {"region": "eu"}, "per_unit": {"unit_price": "2"}}]}"#,
    )
    .unwrap();
    let refused = tally(
        e,
        &[
            "price",
            "publish",
            "amb",
            "--asset",
            "CREDITS",
            "--file",
            ambiguous.to_str().unwrap(),
        ],
    )
    .err_has("rates[1].match")
    .err_has("as specific as rates[0]");
    assert_ne!(refused.code, 0);
    tally(e, &["price", "show", "llm"])
        .ok()
        .has("model=large")
        .has("graduated per 1: 100@1, inf@0.5")
        .has("version         2");
    let json = tally(e, &["--json", "price", "show", "llm"]).ok().json();
    let file: Value = serde_json::from_str(RATES).unwrap();
    assert_eq!(
        sorted_rates(&json["rates"]),
        sorted_rates(&file["rates"]),
        "price show --json gives back the rates file"
    );
    assert_eq!(json["asset"], "CREDITS");

    // Accounts and grants: the pitch's customer.
    tally(
        e,
        &[
            "account",
            "create",
            "acme",
            "--asset",
            "CREDITS",
            "--price-book",
            "llm",
            "--threshold",
            "14900",
            "--metadata",
            "plan=pro",
        ],
    )
    .ok()
    .has("created account acme");
    let json = tally(
        e,
        &[
            "--json",
            "account",
            "create",
            "globex",
            "--asset",
            "CREDITS",
            "--price-book",
            "llm",
            "--credit-limit",
            "50",
            "--list-price",
            "0.01",
            "--auto-recharge-below",
            "100",
            "--auto-recharge-amount",
            "1000",
        ],
    )
    .ok()
    .json();
    assert_eq!(json["already_existed"], false);
    tally(
        e,
        &[
            "grant",
            "add",
            "acme",
            "--id",
            "monthly",
            "--category",
            "allowance",
            "--amount",
            "10000",
            "--reset-every",
            "month",
            "--paid",
            "100",
        ],
    )
    .ok()
    .has("balance after  10000");
    let add_topup = [
        "--json",
        "grant",
        "add",
        "acme",
        "--id",
        "topup",
        "--category",
        "purchased",
        "--amount",
        "5000",
        "--paid",
        "60",
    ];
    let json = tally(e, &add_topup).ok().json();
    assert_eq!(s(&json, "balance_after"), "15000");
    assert_eq!(s(&json, "debt_repaid"), "0");
    // The same grant again (a retry whose answer was lost): nothing changed, and nothing is
    // claimed about what the first add did (debt_repaid said "0").
    let json = tally(e, &add_topup).ok().json();
    assert_eq!(json["already_existed"], true, "{json}");
    assert!(
        json["debt_repaid"].is_null() && json["balance_after"].is_null(),
        "{json}"
    );
    tally(
        e,
        &[
            "grant",
            "add",
            "acme",
            "--id",
            "promo",
            "--category",
            "promotional",
            "--amount",
            "5",
            "--priority",
            "90",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ],
    )
    .ok();

    tally(e, &["account", "show", "acme"])
        .ok()
        .has("balance       15005")
        .has("monthly")
        .has("allowance")
        .has("purchased");
    let json = tally(e, &["--json", "account", "show", "acme"]).ok().json();
    for key in [
        "account",
        "asset",
        "balance",
        "available",
        "held",
        "debt",
        "credit_limit",
    ] {
        assert!(
            json[key].is_string(),
            "account show --json lacks {key}: {json}"
        );
    }
    assert_eq!(s(&json, "balance"), "15005");
    let grants = json["grants"].as_array().unwrap();
    assert_eq!(
        grants[0]["id"], "monthly",
        "the allowance is drawn first: {json}"
    );
    for key in [
        "id",
        "category",
        "remaining",
        "priority",
        "expires_at",
        "next_reset",
    ] {
        assert!(
            grants[0].get(key).is_some(),
            "grant lacks {key}: {}",
            grants[0]
        );
    }
    assert!(grants[0]["next_reset"].is_string());
    assert_eq!(
        grants.iter().find(|g| g["id"] == "promo").unwrap()["expires_at"],
        "2099-01-01T00:00:00.000Z"
    );

    // Update: what is given changes, the rest stays.
    tally(e, &["account", "update", "acme", "--list-price", "0.01"])
        .ok()
        .has("updated account acme")
        .has("balance 15005");
    let json = tally(
        e,
        &[
            "--json",
            "account",
            "update",
            "globex",
            "--clear-price-book",
            "--credit-limit",
            "20",
        ],
    )
    .ok()
    .json();
    assert_eq!(s(&json, "credit_limit"), "20");
    assert!(json["price_book"].is_null(), "{json}");
    assert_eq!(json["thresholds"], Value::Array(Vec::new()));

    // Usage: a generated id (human), then a given id in JSON.
    let human_usage = [
        "usage",
        "record",
        "acme",
        "--meter",
        "tokens",
        "--quantity",
        "1500",
        "--dim",
        "model=large",
        "--cost",
        "0.03",
    ];
    let first = tally(e, &human_usage)
        .ok()
        .has("outcome        settled")
        .has("charged        15")
        .has("drawdown       monthly 15")
        .err_has("to retry this event: --event-id evt-");
    // The printed hint retries the very same event: a duplicate, nothing charged again.
    let hint = first
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("to retry this event: "))
        .expect("retry hint")
        .to_string();
    let mut retry: Vec<&str> = human_usage.to_vec();
    retry.extend(hint.split(' '));
    tally(e, &retry)
        .ok()
        .has("outcome        duplicate")
        .has("balance after  14990");
    let json = tally(
        e,
        &[
            "--json",
            "usage",
            "record",
            "acme",
            "--meter",
            "tokens",
            "--quantity",
            "1000",
            "--dim",
            "model=small",
            "--event-id",
            "e-1",
            "--cost",
            "0.01",
            "--occurred-at",
            &tally_core_now(),
        ],
    )
    .ok()
    .json();
    assert_eq!(s(&json, "outcome"), "settled");
    assert_eq!(s(&json, "event_id"), "e-1");
    assert_eq!(s(&json, "charged"), "2");
    assert_eq!(s(&json, "balance_after"), "14988");
    assert_eq!(json["drawdown"][0]["grant"], "monthly");
    assert_eq!(s(&json, "revenue"), "0.02");
    assert_eq!(s(&json, "cost"), "0.01");
    assert_eq!(s(&json, "margin"), "0.01");
    assert_eq!(json["price_version"], 2);
    let generated = tally(
        e,
        &[
            "--json",
            "usage",
            "record",
            "acme",
            "--meter",
            "calls",
            "--quantity",
            "1",
        ],
    )
    .ok()
    .json();
    assert!(s(&generated, "event_id").starts_with("evt-"));
    assert_eq!(generated["event_id_generated"], true);
    assert_eq!(s(&generated, "charged"), "0.1");

    // A rejection is an answer with its reason, and a non-zero exit.
    tally(
        e,
        &[
            "usage",
            "record",
            "acme",
            "--meter",
            "tokens",
            "--quantity",
            "99999999",
            "--dim",
            "model=large",
        ],
    )
    .code(1)
    .has("insufficient_funds");
    let json = tally(
        e,
        &[
            "--json",
            "usage",
            "record",
            "acme",
            "--meter",
            "video",
            "--quantity",
            "1",
        ],
    )
    .code(1)
    .json();
    assert_eq!(s(&json, "outcome"), "rejected");
    assert_eq!(s(&json, "reason"), "no_rate");

    // Import: 20 events in batches of 7, then the same file again changes nothing.
    let occurred = tally_core_now();
    let lines: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"event_id": "imp-{i}", "account": "acme", "meter": "tokens", "quantity": "1000", "dimensions": {{"model": "large"}}, "occurred_at": "{occurred}", "cost": "0.02"}}"#))
        .collect();
    let import_path = dir.join("usage.jsonl");
    std::fs::write(&import_path, lines.join("\n") + "\n").unwrap();
    let import = import_path.to_str().unwrap();
    tally(e, &["usage", "import", import, "--batch", "7"])
        .ok()
        .has("settled    20")
        .has("batches    3")
        .err_has("20/20 events");
    let json = tally(
        e,
        &[
            "--json",
            "usage",
            "import",
            import,
            "--batch",
            "3",
            "--atomic",
            "--in-flight",
            "4",
        ],
    )
    .ok()
    .json();
    assert_eq!(json["duplicate"], 20);
    assert_eq!(json["settled"], 0);

    // Holds.
    tally(
        e,
        &[
            "hold",
            "authorize",
            "acme",
            "--id",
            "job-1",
            "--amount",
            "100",
            "--expires-in",
            "10m",
        ],
    )
    .ok()
    .has("available after 14687.9");
    let job_2 = [
        "hold",
        "authorize",
        "acme",
        "--id",
        "job-2",
        "--amount",
        "50",
        "--expires-in",
        "90s",
    ];
    let json = tally(e, &[&["--json"][..], &job_2[..]].concat())
        .ok()
        .json();
    assert_eq!(s(&json, "available_after"), "14637.9");
    assert_eq!(json["already_existed"], false);
    let expires_at = json["expires_at"].clone();
    assert!(expires_at.is_string(), "{json}");
    // The same authorization again (a retry): nothing changes, and the reply says so, with
    // the hold's expiry as first authorized and what is available now.
    tally(e, &job_2)
        .ok()
        .has("hold job-2 on acme already existed with amount 50 (expires at")
        .has("available now 14637.9); nothing changed");
    let json = tally(e, &[&["--json"][..], &job_2[..]].concat())
        .ok()
        .json();
    assert_eq!(json["already_existed"], true);
    assert_eq!(json["expires_at"], expires_at);
    assert_eq!(s(&json, "available_after"), "14637.9");
    let json = tally(
        e,
        &[
            "--json",
            "usage",
            "record",
            "acme",
            "--meter",
            "tokens",
            "--quantity",
            "500",
            "--dim",
            "model=large",
            "--hold",
            "job-1",
        ],
    )
    .ok()
    .json();
    assert_eq!(s(&json, "from_hold"), "5");
    tally(e, &["hold", "release", "acme", "job-2"])
        .ok()
        .has("50 of hold job-2");
    let json = tally(e, &["--json", "hold", "release", "acme", "job-1"])
        .ok()
        .json();
    assert_eq!(s(&json, "released"), "95");
    // Released again (a retry whose answer was lost): nothing changed, and said so.
    tally(e, &["hold", "release", "acme", "job-1"])
        .ok()
        .has("hold job-1 on acme had already ended (released at")
        .has("; nothing changed");
    let json = tally(e, &["--json", "hold", "release", "acme", "job-1"])
        .ok()
        .json();
    assert_eq!(json["already_ended"], true);
    assert_eq!(s(&json, "ended_as"), "released");
    assert!(json["ended_at"].is_string(), "{json}");

    // Reports and history.
    tally(e, &["report", "acme"])
        .ok()
        .has("revenue")
        .has("tokens")
        .has("margin");
    let json = tally(
        e,
        &[
            "--json",
            "report",
            "acme",
            "--month",
            &tally_core_now()[..7],
        ],
    )
    .ok()
    .json();
    assert_eq!(json["events"], 24);
    assert_eq!(json["account"], "acme");
    let json = tally(e, &["--json", "report"]).ok().json();
    assert!(json["account"].is_null());
    assert_eq!(json["events"], 24);
    tally(e, &["history", "acme", "--limit", "3"])
        .ok()
        .has("usage")
        .has("(more: tally history acme --before");
    // A page that ends at the account's first entry offers no next page (it offered one,
    // which then listed nothing).
    let json = tally(e, &["--json", "history", "acme", "--limit", "1000"])
        .ok()
        .json();
    let all = json["entries"].as_array().unwrap().len();
    assert!(json["next_before_seq"].is_null(), "{json}");
    let json = tally(
        e,
        &["--json", "history", "acme", "--limit", &all.to_string()],
    )
    .ok()
    .json();
    assert_eq!(json["entries"].as_array().unwrap().len(), all);
    assert!(json["next_before_seq"].is_null(), "{json}");
    let json = tally(
        e,
        &[
            "--json",
            "history",
            "acme",
            "--limit",
            &(all - 1).to_string(),
        ],
    )
    .ok()
    .json();
    assert!(json["next_before_seq"].is_u64(), "{json}");
    let json = tally(e, &["--json", "history", "acme", "--limit", "2"])
        .ok()
        .json();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        entries[0]["seq"].as_u64() > entries[1]["seq"].as_u64(),
        "newest first"
    );

    // Events: the balance fell below the 14,900 threshold.
    tally(e, &["events"]).ok().has("balance_low").has("acme");
    let json = tally(e, &["--json", "events", "--from", "1"]).ok().json();
    let events = json["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|ev| ev["kind"] == "balance_low" && ev["detail"]["threshold"] == "14900"),
        "{json}"
    );
    // --follow prints as events arrive and keeps running.
    let mut follow = Command::new(tally_binary())
        .args(endpoint_args(e))
        .args(["--json", "events", "--follow", "--from", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(follow.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let first: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(first["seq"], 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "events --follow exited by itself"
    );
    follow.kill().unwrap();
    follow.wait().unwrap();

    // Void, freeze, unfreeze, close.
    let void_promo = [
        "grant",
        "void",
        "acme",
        "promo",
        "--reason",
        "campaign ended",
    ];
    tally(e, &void_promo).ok().has("5 of grant promo");
    tally(
        e,
        &[
            "grant",
            "add",
            "globex",
            "--id",
            "p",
            "--category",
            "promotional",
            "--amount",
            "10",
        ],
    )
    .ok();
    let void_p = ["--json", "grant", "void", "globex", "p", "--reason", "test"];
    let json = tally(e, &void_p).ok().json();
    assert_eq!(s(&json, "voided"), "10");
    assert_eq!(json["already_ended"], Value::Bool(false));
    // Voiding again (a retry whose answer was lost) changes nothing and says so.
    let json = tally(e, &void_p).ok().json();
    assert_eq!(
        (
            s(&json, "voided"),
            &json["already_ended"],
            s(&json, "ended_as")
        ),
        ("0", &Value::Bool(true), "voided")
    );
    tally(e, &void_promo)
        .ok()
        .has("grant promo on acme had already ended (voided); nothing changed");
    tally(e, &["account", "freeze", "acme"])
        .ok()
        .has("now frozen");
    tally(
        e,
        &[
            "usage",
            "record",
            "acme",
            "--meter",
            "calls",
            "--quantity",
            "1",
        ],
    )
    .code(1)
    .has("account_frozen");
    let json = tally(e, &["--json", "account", "unfreeze", "acme"])
        .ok()
        .json();
    assert_eq!(s(&json, "status"), "active");
    tally(e, &["account", "close", "globex"])
        .ok()
        .has("now closed");
    tally(e, &["account", "create", "initech", "--asset", "CREDITS"]).ok();
    let json = tally(e, &["--json", "account", "close", "initech"])
        .ok()
        .json();
    assert_eq!(s(&json, "status"), "closed");

    // The cost book prices what an event without its own cost cost the operator.
    let costs_path = dir.join("costs.json");
    std::fs::write(
        &costs_path,
        r#"{"rates": [{"meter": "tokens", "per_unit": {"unit_price": "0.00001"}}]}"#,
    )
    .unwrap();
    let costs = costs_path.to_str().unwrap();
    tally(e, &["price", "publish-costs", "--file", costs])
        .ok()
        .has("published cost book version 1");
    let json = tally(e, &["--json", "price", "publish-costs", "--file", costs])
        .ok()
        .json();
    assert_eq!(json["version"], 2);
    let json = tally(
        e,
        &[
            "--json",
            "usage",
            "record",
            "acme",
            "--meter",
            "tokens",
            "--quantity",
            "1000",
            "--dim",
            "model=large",
        ],
    )
    .ok()
    .json();
    assert_eq!(s(&json, "cost"), "0.01", "{json}");
    // Prices at a time: the book in force then.
    let json = tally(
        e,
        &["--json", "price", "show", "llm", "--at", &tally_core_now()],
    )
    .ok()
    .json();
    assert_eq!(json["version"], 2);
    // Before its first version the book exists, with nothing in force yet: said so (it was
    // answered as an unknown book).
    tally(e, &["price", "show", "llm", "--at", "2000-01-01T00:00:00Z"])
        .code(1)
        .err_has("error: no_rate: price book llm has no version in force at 2000-01-01T00:00:00")
        .err_has("(the first takes effect at ");
    // The cost book reads back as a price book does.
    tally(e, &["price", "show-costs"])
        .ok()
        .has("version")
        .has("tokens")
        .has("0.00001");
    let json = tally(e, &["--json", "price", "show-costs"]).ok().json();
    assert_eq!(json["version"], 2, "{json}");
    assert_eq!(json["rates"][0]["meter"], "tokens", "{json}");
    tally(e, &["price", "show-costs", "--at", "2000-01-01T00:00:00Z"])
        .code(1)
        .err_has("error: no_rate: the cost book has no version in force at 2000-01-01");

    // Ledger errors: the stable code and a sentence; JSON errors are one object.
    tally(e, &["account", "show", "nobody"])
        .code(1)
        .err_has("error: unknown_account: ");
    let json = tally(e, &["--json", "account", "show", "nobody"])
        .code(1)
        .json();
    assert_eq!(json["error"]["code"], "unknown_account");
    tally(
        e,
        &[
            "grant",
            "add",
            "acme",
            "--id",
            "x",
            "--category",
            "purchased",
            "--amount",
            "1.00001",
            "--paid",
            "1",
        ],
    )
    .code(1)
    .err_has("invalid_argument");

    // Cluster commands.
    let leader = cluster.leader().await;
    tally(e, &["cluster", "status"])
        .ok()
        .has("leader")
        .has("follower")
        .has("voter");
    let json = tally(e, &["--json", "cluster", "status"]).ok().json();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(json["leader_id"], leader);
    assert_eq!(
        json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "leader")
            .count(),
        1
    );
    tally(e, &["cluster", "hash"]).ok().has("all 3 nodes agree");
    let json = tally(e, &["--json", "cluster", "hash"]).ok().json();
    assert_eq!(json["agree"], true);
    tally(e, &["cluster", "snapshot"])
        .ok()
        .has("SNAPSHOT INDEX");
    let json = tally(e, &["--json", "cluster", "snapshot"]).ok().json();
    assert!(json["nodes"][0]["snapshot_index"].as_u64().unwrap() > 0);

    let peer4 = cluster.spawn_joiner(4).await;
    tally(e, &["cluster", "add-learner", "4", &peer4])
        .ok()
        .has("added node 4")
        .has("learner");
    let json = tally(e, &["--json", "cluster", "promote", "4"]).ok().json();
    assert!(
        json["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == 4 && m["voter"] == true),
        "{json}"
    );
    tally(e, &["cluster", "remove", "4"])
        .ok()
        .has("removed node 4");
    // Again (a retry whose first answer was lost): nothing to do, said so, exit 0.
    tally(e, &["cluster", "remove", "4"])
        .ok()
        .has("node 4 is not a member; nothing to remove");
    // Still running, node 4 names its old role and leader; the status says it is no member.
    let mut with_4 = e.to_vec();
    with_4.push(cluster.node(4).addrs.client.clone());
    tally(&with_4, &["cluster", "status"])
        .ok()
        .has("not a member (");
    let json = tally(&with_4, &["--json", "cluster", "status"]).ok().json();
    let nodes = json["nodes"].as_array().unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n["node_id"] == 4 && n["member"] == false)
            && nodes.iter().filter(|n| n["member"] == true).count() == 3,
        "{json}"
    );
    let peer5 = cluster.spawn_joiner(5).await;
    let json = tally(e, &["--json", "cluster", "add-learner", "5", &peer5])
        .ok()
        .json();
    assert!(
        json["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == 5 && m["voter"] == false),
        "{json}"
    );
    tally(e, &["cluster", "promote", "5"])
        .ok()
        .has("node 5 is now a voter");
    // A learner at an address where nothing answers: added all the same, and the answer says
    // so within the caller's deadline (it used to be three timeouts, then "outcome unknown").
    let nowhere = format!("127.0.0.1:{}", tally_tests::free_ports(1)[0]);
    tally(
        e,
        &["--timeout", "3s", "cluster", "add-learner", "6", &nowhere],
    )
    .code(3)
    .has("added node 6")
    .err_has("node 6 has not caught up: it received nothing within")
    .err_has("tally cluster remove 6");
    let json = tally(
        e,
        &[
            "--json",
            "--timeout",
            "2s",
            "cluster",
            "add-learner",
            "6",
            &nowhere,
        ],
    )
    .code(3)
    .json();
    assert_eq!(json["unchanged"], true, "{json}");
    assert!(
        json["not_caught_up"]
            .as_str()
            .is_some_and(|why| why.contains("it received nothing within")),
        "{json}"
    );
    tally(e, &["cluster", "remove", "6"])
        .ok()
        .has("removed node 6");
    let json = tally(e, &["--json", "cluster", "remove", "5"]).ok().json();
    assert!(
        !json["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == 5),
        "{json}"
    );

    // The demo runs end to end (small), human and JSON.
    tally(
        e,
        &[
            "demo",
            "--customers",
            "2",
            "--events",
            "300",
            "--batch",
            "50",
            "--pause",
            "1ms",
        ],
    )
    .ok()
    .has("price change")
    .has("MARGIN USD");
    let json = tally(
        e,
        &["--json", "demo", "--customers", "2", "--events", "100"],
    )
    .ok()
    .json();
    assert_eq!(json["events"], 100);
    assert_eq!(json["customers"].as_array().unwrap().len(), 2);

    cluster.converged_hash(&[1, 2, 3]).await;
}

/// Now as RFC 3339 with second precision (this crate does not depend on tally-core's calendar).
/// A whole second at or after now (the CLI takes seconds; the ledger stamps milliseconds, so
/// truncating could name an instant before something published this very second).
fn tally_core_now() -> String {
    let secs = tally_tests::now_ms() / 1000 + 1;
    let days = secs / 86_400;
    let (y, m, d) = civil(days as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn civil(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days -> civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[test]
fn bad_flags_and_values_are_refused_before_any_request() {
    // Nothing listens here: a command that sent anything would exit 3 (unavailable), not 2.
    let closed = vec![format!("127.0.0.1:{}", free_ports(1)[0])];
    let e = closed.as_slice();
    let cases: &[(&[&str], &str)] = &[
        // A required argument left out: named in the message, not only in `field`.
        (&["account", "show"], "<ID>"),
        // Node ids start at 1: refused before any request, as any other bad value.
        (&["cluster", "promote", "0"], "<ID>"),
        (&["cluster", "remove", "0"], "<ID>"),
        (&["cluster", "add-learner", "0", "127.0.0.1:7204"], "<ID>"),
        (
            &[
                "grant",
                "add",
                "acme",
                "--id",
                "g",
                "--category",
                "gift",
                "--amount",
                "5",
            ],
            "--category",
        ),
        (
            &[
                "grant",
                "add",
                "acme",
                "--id",
                "g",
                "--category",
                "purchased",
                "--amount",
                "-5",
                "--paid",
                "1",
            ],
            "--amount",
        ),
        (
            &[
                "grant",
                "add",
                "acme",
                "--id",
                "g",
                "--category",
                "purchased",
                "--amount",
                "5",
            ],
            "--paid",
        ),
        (
            &[
                "grant",
                "add",
                "acme",
                "--id",
                "g",
                "--category",
                "purchased",
                "--amount",
                "5",
                "--paid",
                "1",
                "--reset-every",
                "month",
            ],
            "--reset-every",
        ),
        (
            &[
                "grant",
                "add",
                "acme",
                "--id",
                "g",
                "--category",
                "allowance",
                "--amount",
                "5",
                "--priority",
                "101",
            ],
            "--priority",
        ),
        (
            &[
                "grant",
                "add",
                "acme",
                "--id",
                "g",
                "--category",
                "allowance",
                "--amount",
                "1e3",
            ],
            "--amount",
        ),
        (
            &[
                "grant",
                "add",
                "acme",
                "--id",
                "g",
                "--category",
                "allowance",
                "--amount",
                "5",
                "--expires-at",
                "tomorrow",
            ],
            "--expires-at",
        ),
        (
            &[
                "hold",
                "authorize",
                "acme",
                "--id",
                "h",
                "--amount",
                "5",
                "--expires-in",
                "10",
            ],
            "--expires-in",
        ),
        (
            &[
                "hold",
                "authorize",
                "acme",
                "--id",
                "h",
                "--amount",
                "5",
                "--expires-in",
                "48h",
            ],
            "--expires-in",
        ),
        (
            &[
                "usage",
                "record",
                "bad id",
                "--meter",
                "t",
                "--quantity",
                "1",
            ],
            "<ACCOUNT>",
        ),
        (
            &[
                "usage",
                "record",
                "acme",
                "--meter",
                "t",
                "--quantity",
                "abc",
            ],
            "--quantity",
        ),
        (
            &[
                "usage",
                "record",
                "acme",
                "--meter",
                "t",
                "--quantity",
                "1",
                "--dim",
                "model",
            ],
            "--dim",
        ),
        (
            &[
                "usage",
                "record",
                "acme",
                "--meter",
                "t",
                "--quantity",
                "1",
                "--occurred-at",
                "2026-13-01T00:00:00Z",
            ],
            "--occurred-at",
        ),
        (&["usage", "record", "acme", "--quantity", "1"], "--meter"),
        (&["usage", "import", "/nonexistent/usage.jsonl"], "FILE"),
        (&["usage", "import", "x.jsonl", "--batch", "0"], "--batch"),
        (
            &["usage", "import", "x.jsonl", "--batch-bytes", "100"],
            "--batch-bytes",
        ),
        (&["report", "--month", "2026-13"], "--month"),
        (&["asset", "create", "usd", "--scale", "2"], "<CODE>"),
        (&["asset", "create", "USD", "--scale", "19"], "--scale"),
        (
            &[
                "account",
                "create",
                "x",
                "--asset",
                "USD",
                "--auto-recharge-below",
                "5",
            ],
            "--auto-recharge-amount",
        ),
        (
            &[
                "account",
                "create",
                "x",
                "--asset",
                "USD",
                "--credit-limit",
                "-1",
            ],
            "--credit-limit",
        ),
        (
            &[
                "price",
                "publish",
                "b",
                "--asset",
                "USD",
                "--file",
                "/nonexistent.json",
            ],
            "--file",
        ),
        (&["history", "acme", "--limit", "0"], "--limit"),
        (&["account", "update", "acme"], "nothing to change"),
        (
            &[
                "account",
                "update",
                "acme",
                "--price-book",
                "b",
                "--clear-price-book",
            ],
            "--clear-price-book",
        ),
        (&["cluster", "promote", "four"], "<ID>"),
        (&["--timeout", "soon", "cluster", "status"], "--timeout"),
        (&["account", "frobnicate", "x"], "frobnicate"),
        // Values the client's own checks refuse before sending (as the server would).
        (&["grant", "void", "acme", "g1", "--reason", ""], "reason"),
        (
            &[
                "usage",
                "record",
                "acme",
                "--meter",
                "t",
                "--quantity",
                "10000000000000000",
            ],
            "quantity",
        ),
        (
            &[
                "usage",
                "record",
                "acme",
                "--meter",
                "t",
                "--quantity",
                "1",
                "--occurred-at",
                "€€a€",
            ],
            "--occurred-at",
        ),
    ];
    for (args, flag) in cases {
        let run = tally(e, args).code(2);
        assert!(
            run.stderr.contains(flag),
            "tally {args:?}: the error should name {flag}:\n{}",
            run.stderr
        );
        assert!(
            run.stdout.is_empty(),
            "tally {args:?} printed {}",
            run.stdout
        );
        // With --json, whether clap's parser or a later check refused it: one JSON error
        // object on stdout naming the flag, nothing on stderr.
        let with_json: Vec<&str> = std::iter::once("--json")
            .chain(args.iter().copied())
            .collect();
        let run = tally(e, &with_json).code(2);
        let json = run.json();
        assert_eq!(
            json["error"]["code"], "invalid_argument",
            "{args:?}: {json}"
        );
        assert!(
            json["error"]["message"].as_str().unwrap().contains(flag),
            "tally --json {args:?}: the error's message should name {flag}: {json}"
        );
        assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
    }
    // A command without its subcommand: with --json, an error naming what is missing (not the
    // command's help text).
    let json = tally(e, &["--json", "grant"]).code(2).json();
    assert_eq!(json["error"]["code"], "invalid_argument", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a subcommand is required"),
        "{json}"
    );
    let run = Command::new(tally_binary())
        .args(["--endpoint", "nope", "report"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--endpoint"));

    // A bad rates file and a bad import line name where the problem is; nothing is sent.
    let dir = tempfile::tempdir().unwrap();
    let bad_rates = dir.path().join("rates.json");
    std::fs::write(
        &bad_rates,
        r#"{"rates": [{"meter": "t", "per_unit": {"unit_price": 0.1}}]}"#,
    )
    .unwrap();
    tally(
        e,
        &[
            "price",
            "publish",
            "b",
            "--asset",
            "USD",
            "--file",
            bad_rates.to_str().unwrap(),
        ],
    )
    .code(2)
    .err_has("decimal strings");
    let bad_import = dir.path().join("usage.jsonl");
    std::fs::write(&bad_import, "{\"account\": \"a\", \"meter\": \"t\", \"quantity\": \"1\"}\n{\"account\": \"a\", \"meter\": \"t\", \"quantity\": \"-1\"}\n").unwrap();
    tally(e, &["usage", "import", bad_import.to_str().unwrap()])
        .code(2)
        .err_has("usage.jsonl:2")
        .err_has("quantity");
    let json = tally(
        e,
        &["--json", "usage", "import", bad_import.to_str().unwrap()],
    )
    .code(2)
    .json();
    assert_eq!(json["error"]["code"], "invalid_argument");

    // With the values right, the same closed endpoint is reported as unreachable (exit 3).
    tally(e, &["--timeout", "1s", "account", "show", "acme"])
        .code(3)
        .err_has("unavailable");
    // An event whose outcome is unknown: the retry must name it (the same command would
    // record a new event with a new id), in words and in the JSON error's details.
    let record = [
        "--timeout",
        "1s",
        "usage",
        "record",
        "acme",
        "--meter",
        "t",
        "--quantity",
        "1",
    ];
    let run = tally(e, &record)
        .code(3)
        .err_has("retry this event with --event-id evt-");
    assert!(run.stderr.contains("--occurred-at"), "{}", run.stderr);
    let named = [&["--json"][..], &record, &["--event-id", "e-unknown"]].concat();
    let json = tally(e, &named).code(3).json();
    assert_eq!(json["error"]["details"]["event_id"], "e-unknown");
    assert!(
        json["error"]["details"]["occurred_at"].is_string(),
        "{json}"
    );
}

#[tokio::test]
async fn a_retry_through_another_node_settles_the_event_once() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    let all = all_endpoints(&cluster);
    let e = all.as_slice();
    let rates = cluster.dir().join("rates.json");
    std::fs::write(&rates, RATES).unwrap();
    tally(e, &["asset", "create", "CREDITS", "--scale", "4"]).ok();
    tally(
        e,
        &[
            "price",
            "publish",
            "llm",
            "--asset",
            "CREDITS",
            "--file",
            rates.to_str().unwrap(),
        ],
    )
    .ok();
    tally(
        e,
        &[
            "account",
            "create",
            "acme",
            "--asset",
            "CREDITS",
            "--price-book",
            "llm",
            "--threshold",
            "950",
        ],
    )
    .ok();
    tally(
        e,
        &[
            "grant",
            "add",
            "acme",
            "--id",
            "topup",
            "--category",
            "purchased",
            "--amount",
            "1000",
            "--paid",
            "10",
        ],
    )
    .ok();

    let leader = cluster.leader().await;
    let follower = *cluster.running().iter().find(|id| **id != leader).unwrap();
    let occurred = tally_core_now();
    let event = [
        "--json",
        "usage",
        "record",
        "acme",
        "--meter",
        "tokens",
        "--quantity",
        "700",
        "--dim",
        "model=large",
        "--event-id",
        "evt-retry-1",
        "--occurred-at",
        &occurred,
    ];

    // First through the leader only.
    let leader_endpoint = vec![cluster.node(leader).addrs.client.clone()];
    let first = tally(&leader_endpoint, &event).ok().json();
    assert_eq!(s(&first, "outcome"), "settled");
    assert_eq!(s(&first, "charged"), "7");

    // A follower of the event stream, connected to the leader first.
    let mut stream_endpoints = vec![cluster.node(leader).addrs.client.clone()];
    stream_endpoints.push(cluster.node(follower).addrs.client.clone());
    let mut follow = Command::new(tally_binary())
        .args(endpoint_args(&stream_endpoints))
        .args(["--json", "events", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let follow_stdout = follow.stdout.take().unwrap();
    let (lines_sender, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(follow_stdout).lines().map_while(Result::ok) {
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // The answer "was lost": the leader dies; the same event goes through a follower.
    cluster.kill9(leader);
    let follower_endpoint = vec![cluster.node(follower).addrs.client.clone()];
    let started = Instant::now();
    let second = tally(&follower_endpoint, &event).ok().json();
    assert_eq!(s(&second, "outcome"), "duplicate");
    for key in ["charged", "balance_after", "revenue", "settled_at"] {
        assert_eq!(
            second[key], first[key],
            "{key}: the duplicate carries the original result"
        );
    }
    eprintln!(
        "retry through node {follower} answered in {:?}",
        started.elapsed()
    );

    // And through every endpoint, the dead one first: the client routes around it.
    let mut dead_first = vec![cluster.node(leader).addrs.client.clone()];
    dead_first.extend(
        cluster
            .running()
            .iter()
            .map(|id| cluster.node(*id).addrs.client.clone()),
    );
    let third = tally(&dead_first, &event).ok().json();
    assert_eq!(s(&third, "outcome"), "duplicate");
    let account = tally(&dead_first, &["--json", "account", "show", "acme"])
        .ok()
        .json();
    assert_eq!(s(&account, "balance"), "993", "charged once: {account}");
    let report = tally(&dead_first, &["--json", "report", "acme"])
        .ok()
        .json();
    assert_eq!(report["events"], 1);

    // A new event through the dead node and a live one settles (retry across endpoints).
    let new_event = tally(
        &dead_first,
        &[
            "--json",
            "usage",
            "record",
            "acme",
            "--meter",
            "tokens",
            "--quantity",
            "5000",
            "--dim",
            "model=large",
        ],
    )
    .ok()
    .json();
    assert_eq!(s(&new_event, "outcome"), "settled");
    assert_eq!(s(&new_event, "balance_after"), "943");

    // The event stream survived its node's death: it resumed elsewhere and saw the crossing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| {
            panic!("events --follow never showed the crossing after its node died; saw {seen:?}")
        });
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["kind"] == "balance_low" && event["detail"]["balance"] == "943" {
            break;
        }
        seen.push(event);
    }
    follow.kill().unwrap();
    follow.wait().unwrap();

    // Operators still see the cluster with a node down.
    tally(&dead_first, &["cluster", "status"])
        .ok()
        .has("unreachable (unavailable)")
        .has("leader");
    let status = tally(&dead_first, &["--json", "cluster", "status"])
        .ok()
        .json();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes.iter().filter(|n| n.get("error").is_some()).count(), 1);
    let hash = tally(&dead_first, &["--json", "cluster", "hash"])
        .ok()
        .json();
    assert_eq!(hash["agree"], true, "{hash}");
    assert_eq!(
        (hash["answered"].as_u64(), hash["unreachable"].as_u64()),
        (Some(2), Some(1))
    );
    tally(&dead_first, &["cluster", "hash"])
        .ok()
        .has("the 2 nodes that answered agree; 1 unreachable, not compared");
    // With one node answering there is nothing to compare: no "agree", and not exit 0.
    let one_live = vec![
        cluster.node(leader).addrs.client.clone(),
        cluster.node(follower).addrs.client.clone(),
    ];
    tally(&one_live, &["cluster", "hash"])
        .code(3)
        .has("only 1 of 2 nodes answered: nothing to compare");
    let hash = tally(&one_live, &["--json", "cluster", "hash"])
        .code(3)
        .json();
    assert_eq!(hash["agree"], Value::Null, "{hash}");
    assert_eq!(
        (hash["answered"].as_u64(), hash["unreachable"].as_u64()),
        (Some(1), Some(1))
    );
    // One endpoint given on purpose: said so, exit 0.
    tally(&follower_endpoint, &["cluster", "hash"])
        .ok()
        .has("one endpoint given: nothing to compare");
    let running = cluster.running();
    cluster.converged_hash(&running).await;
}

/// Through `client`, once asset `CREDITS` exists: price book `std` charging 1 per `tokens`,
/// and account `acme` (alert thresholds `thresholds`) with a purchased grant of 100 credits.
async fn price_and_fund_acme(client: &tally_client::Client, thresholds: &[&str]) {
    use tally_client::v1;
    client
        .publish_prices(v1::PublishPricesRequest {
            book: "std".into(),
            asset: "CREDITS".into(),
            effective_from_ms: None,
            rates: vec![v1::Rate {
                meter: "tokens".into(),
                dimensions: Vec::new(),
                model: Some(v1::rate::Model::PerUnit(v1::PerUnit {
                    unit_price: "1".into(),
                    per: "1".into(),
                })),
            }],
        })
        .await
        .unwrap();
    client
        .create_account(v1::CreateAccountRequest {
            id: "acme".into(),
            asset: "CREDITS".into(),
            price_book: Some("std".into()),
            thresholds: thresholds.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    add_purchased_to_acme(client, "g").await;
}

/// A purchased grant `grant_id` of 100 credits (paid 1) on `acme`.
async fn add_purchased_to_acme(client: &tally_client::Client, grant_id: &str) {
    use tally_client::v1;
    client
        .add_grant(v1::AddGrantRequest {
            account: "acme".into(),
            grant_id: grant_id.into(),
            category: v1::GrantCategory::Purchased as i32,
            amount: "100".into(),
            paid: Some("1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The client library itself (what the CLI is built on): leader routing from a follower-only
/// endpoint list, the batching helper with per-event outcomes, and the event subscription.
#[tokio::test]
async fn client_library_routes_batches_and_streams() {
    use tally_client::{usage_event, Client, ClientConfig, UsageBatcher, UsageOutcome};

    let cluster = Cluster::start(ClusterSpec::default()).await;
    let leader = cluster.leader().await;
    let followers: Vec<String> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .map(|id| cluster.node(id).addrs.client.clone())
        .collect();
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let mut endpoints = vec![dead];
    endpoints.extend(followers);
    let client = Client::new(ClientConfig::with_endpoints(endpoints)).unwrap();

    client.create_asset("CREDITS", 0).await.unwrap();
    // A follower forwarded the write and named the leader; the client now goes there first.
    assert_eq!(
        client.known_leader().as_deref(),
        Some(cluster.node(leader).addrs.client.as_str())
    );
    price_and_fund_acme(&client, &["50"]).await;

    // 23 events through a batcher of 7 with 3 batches in flight: three full batches sent by
    // `push`, two events left for `flush`; outcomes come back per event, in push order.
    let occurred = tally_tests::now_ms();
    let mut batcher = UsageBatcher::new(client.clone(), 7, false).with_in_flight(3);
    let mut outcomes = Vec::new();
    for i in 0..23 {
        let event = usage_event(&format!("b-{i}"), "acme", "tokens", "4", occurred);
        outcomes.extend(batcher.push(event).await.unwrap());
    }
    assert_eq!(batcher.pending_len(), 2);
    outcomes.extend(batcher.flush().await.unwrap());
    assert_eq!(outcomes.len(), 23);
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.event_id, format!("b-{i}"));
        assert_eq!(
            outcome.outcome.kind(),
            "settled",
            "event {i}: {:?}",
            outcome.outcome
        );
    }
    let last = outcomes[22].outcome.settlement().unwrap();
    assert_eq!(last.balance_after.to_string(), "8");

    // An event with a bad value is refused by `push` alone, naming the field, and never
    // buffered: the events around it make up their batch and settle (it used to sink its
    // whole batch, refused as `events[1].quantity`).
    let mut strict = UsageBatcher::new(client.clone(), 2, false);
    let mut after = strict
        .push(usage_event("after-1", "acme", "tokens", "0", occurred))
        .await
        .unwrap();
    let refused = strict
        .push(usage_event("neg-1", "acme", "tokens", "-1", occurred))
        .await
        .expect_err("a negative quantity is refused");
    assert!(refused.is_local(), "{refused:?}");
    assert_eq!(
        refused.details().get("field").map(String::as_str),
        Some("quantity"),
        "{refused:?}"
    );
    assert_eq!(strict.pending_len(), 1);
    after.extend(
        strict
            .push(usage_event("after-2", "acme", "tokens", "0", occurred))
            .await
            .unwrap(),
    );
    after.extend(strict.flush().await.unwrap());
    assert!(strict.take_refused().is_empty());
    assert_eq!(strict.unanswered_len(), 0);
    let settled: Vec<(&str, &str)> = after
        .iter()
        .map(|o| (o.event_id.as_str(), o.outcome.kind()))
        .collect();
    assert_eq!(settled, [("after-1", "settled"), ("after-2", "settled")]);

    // A reply larger than the client accepts: the batch was applied, so it is not filed as
    // refused ("nothing of them settled" would have the caller charge them again under new
    // ids): its outcome stays unknown, and the same events again are duplicates.
    let small_replies = Client::new(ClientConfig {
        reply_bytes_max: 2_000,
        ..ClientConfig::with_endpoints(all_endpoints(&cluster))
    })
    .unwrap();
    let mut capped = UsageBatcher::new(small_replies, 40, false);
    let capped_events: Vec<_> = (0..40)
        .map(|i| usage_event(&format!("cap-{i}"), "acme", "tokens", "0", occurred))
        .collect();
    let mut failed = None;
    for event in capped_events {
        if let Err(error) = capped.push(event).await {
            failed = Some(error);
        }
    }
    let error = match failed {
        Some(error) => error,
        None => capped.flush().await.expect_err("a reply above 2,000 bytes"),
    };
    assert_eq!(error.code(), tally_client::ErrorCode::Internal, "{error:?}");
    assert!(error.outcome_unknown(), "{error:?}");
    assert!(error.message().contains("may have been applied"), "{error}");
    assert!(capped.take_refused().is_empty());
    assert_eq!(capped.unanswered_len(), 40);
    // Sending it again would meet the same limit: the caller takes the batch out and sends
    // it on a client that reads larger replies, the same ids.
    let failed = capped.take_failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(capped.unanswered_len(), 0);
    let again = client
        .record_usage_batch(failed.concat(), false)
        .await
        .unwrap();
    assert!(
        again.iter().all(|o| o.outcome.kind() == "duplicate"),
        "{again:?}"
    );

    // `usage import` of 4,000 events of about 1.3 KB each (five long dimensions) asked in one
    // batch: 5.3 MB, more than the node's 4 MiB request limit, which would refuse the batch
    // whole; the import cuts it in two by bytes and every event settles. Quantity 0 keeps
    // acme's balance for what follows.
    let long = "v".repeat(250);
    let lines: Vec<String> = (0..4_000)
        .map(|i| {
            format!(
                r#"{{"event_id": "big-{i}", "account": "acme", "meter": "tokens", "quantity": "0", "dimensions": {{"d0": "{long}", "d1": "{long}", "d2": "{long}", "d3": "{long}", "d4": "{long}"}}}}"#
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let import_path = dir.path().join("big.jsonl");
    std::fs::write(&import_path, lines.join("\n") + "\n").unwrap();
    let leader_endpoint = vec![cluster.node(leader).addrs.client.clone()];
    let json = tally(
        &leader_endpoint,
        &[
            "--json",
            "usage",
            "import",
            import_path.to_str().unwrap(),
            "--batch",
            "4000",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        (json["settled"].as_u64(), json["batches"].as_u64()),
        (Some(4_000), Some(2)),
        "{json}"
    );

    // The same events again: every one a duplicate carrying its original settlement.
    let again = client
        .record_usage_batch(
            (0..23)
                .map(|i| usage_event(&format!("b-{i}"), "acme", "tokens", "4", occurred))
                .collect(),
            true,
        )
        .await
        .unwrap();
    assert!(again.iter().all(|o| o.outcome.kind() == "duplicate"));
    assert_eq!(again[22].outcome.settlement(), Some(last));
    // Overdrawing is a rejection with its details, not an error.
    match client
        .record_usage(usage_event("big", "acme", "tokens", "9", occurred))
        .await
        .unwrap()
    {
        UsageOutcome::Rejected(rejection) => {
            assert_eq!(rejection.code.as_str(), "insufficient_funds");
            assert_eq!(rejection.details["available"], "8");
        }
        other => panic!("{other:?}"),
    }

    // The subscription delivers the threshold crossing, in order, and ends when caught up.
    let mut events = client.events(1, false);
    let mut kinds = Vec::new();
    while let Some(event) = events.next().await.unwrap() {
        kinds.push(event.kind);
    }
    assert!(kinds.contains(&"balance_low".to_string()), "{kinds:?}");
    let account = client.get_account("acme").await.unwrap();
    assert_eq!(account.balance, "8");

    // A batch asking for the unsettled events only: counts, the money of what settled now,
    // and the exceptions by position, each as the full reply would carry it.
    let batch = vec![
        usage_event("c-0", "acme", "tokens", "4", occurred),
        usage_event("b-0", "acme", "tokens", "4", occurred),
        usage_event("b-1", "acme", "tokens", "5", occurred),
        usage_event("c-1", "ghost", "tokens", "1", occurred),
        usage_event("c-2", "acme", "tokens", "4", occurred),
        usage_event("c-3", "acme", "tokens", "1", occurred),
    ];
    let summary = client
        .record_usage_batch_unsettled(batch, false)
        .await
        .unwrap();
    assert_eq!(
        (
            summary.settled,
            summary.duplicate,
            summary.conflict,
            summary.rejected
        ),
        (2, 1, 1, 2),
        "{summary:?}"
    );
    // 100 units bought for 1: each unit drawn books 0.01 of revenue; no cost book.
    assert_eq!(summary.revenue.to_string(), "0.08");
    assert_eq!(summary.cost.to_string(), "0");
    assert_eq!(summary.margin.to_string(), "0.08");
    let listed: Vec<(usize, &str, &str)> = summary
        .unsettled
        .iter()
        .map(|(index, event)| (*index, event.event_id.as_str(), event.outcome.kind()))
        .collect();
    assert_eq!(
        listed,
        [
            (1, "b-0", "duplicate"),
            (2, "b-1", "conflict"),
            (3, "c-1", "rejected"),
            (5, "c-3", "rejected"),
        ]
    );
    // The duplicate carries its original settlement, the rejections their codes.
    assert_eq!(
        summary.unsettled[0]
            .1
            .outcome
            .settlement()
            .map(|s| &s.event_id),
        Some(&"b-0".to_string())
    );
    let codes: Vec<&str> = summary
        .unsettled
        .iter()
        .filter_map(|(_, event)| match &event.outcome {
            UsageOutcome::Rejected(rejection) => Some(rejection.code.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(codes, ["unknown_account", "insufficient_funds"]);
    let account = client.get_account("acme").await.unwrap();
    assert_eq!(account.balance, "0", "the two settled events were debited");
}

/// Usage through the client library goes on the client's own HTTP/2 connections (one socket
/// write per call, `tally_client::unary`): the leader named in a reply's metadata routes the
/// next calls, and a connection that ended because its node restarted is replaced by a new one
/// on the next call (with that node as the only endpoint, a client that kept the dead
/// connection could never answer), which settles nothing twice.
#[tokio::test]
async fn client_usage_follows_the_leader_and_reconnects_after_a_restart() {
    use tally_client::{usage_event, Client, ClientConfig, UsageOutcome};

    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", 1000).await;
    let leader = cluster.leader().await;
    let leader_addr = cluster.node(leader).addrs.client.clone();
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let occurred = tally_tests::now_ms();

    // Only a follower configured: it forwards the write, and its reply names the leader.
    let via_follower = Client::new(ClientConfig::with_endpoints([cluster
        .node(follower)
        .addrs
        .client
        .clone()]))
    .unwrap();
    // One usage event of `quantity` tokens, which must settle.
    let settle = |client: &Client, id: &str, quantity: &str| {
        let event = usage_event(id, "acme", "tokens", quantity, occurred);
        let client = client.clone();
        async move {
            let outcome = client.record_usage(event).await.unwrap();
            assert_eq!(outcome.kind(), "settled", "{outcome:?}");
            outcome
        }
    };
    let first = settle(&via_follower, "u-1", "3").await;
    assert_eq!(
        via_follower.known_leader().as_deref(),
        Some(leader_addr.as_str())
    );

    // Only the leader configured; then the leader restarts (the others elect a new one).
    let via_leader = Client::new(ClientConfig::with_endpoints([leader_addr.clone()])).unwrap();
    let second = settle(&via_leader, "u-2", "4").await;
    cluster.stop(leader);
    cluster.restart(leader);
    cluster.wait_ready(leader).await;
    let new_leader = cluster.leader().await;

    settle(&via_leader, "u-3", "5").await;
    assert_eq!(
        via_leader.known_leader().as_deref(),
        Some(cluster.node(new_leader).addrs.client.as_str())
    );
    // The events sent before the restart come back as duplicates with their settlements.
    for (id, quantity, before) in [("u-1", "3", &first), ("u-2", "4", &second)] {
        let again = via_leader
            .record_usage(usage_event(id, "acme", "tokens", quantity, occurred))
            .await
            .unwrap();
        match again {
            UsageOutcome::Duplicate(settlement) => {
                assert_eq!(Some(&settlement), before.settlement(), "{id}")
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    let account = via_follower.get_account("acme").await.unwrap();
    assert_eq!(account.balance, "988");
}

/// Three nodes behind fault-injection proxies; a client pinging every 300 ms (attempts of
/// `request_timeout_ms`); `acme` priced and funded (`thresholds`), and a first event `first-1`
/// of `quantity` settled through it, so that it knows the leader, whose id comes back.
async fn pinging_client_on_three_nodes(
    request_timeout_ms: u64,
    thresholds: &[&str],
    quantity: &str,
) -> (
    tally_tests::faults::cluster::FaultCluster,
    tally_client::Client,
    u64,
) {
    use tally_client::{usage_event, Client, ClientConfig};
    use tally_tests::faults::cluster::{FaultCluster, FaultSpec};

    let cluster = FaultCluster::start(FaultSpec {
        voters: 3,
        max_nodes: 3,
        ..FaultSpec::default()
    })
    .await;
    let addr_of: Vec<(u64, String)> = cluster
        .running()
        .into_iter()
        .map(|id| (id, cluster.node(id).addrs.client.clone()))
        .collect();
    let client = Client::new(ClientConfig {
        request_timeout_ms,
        call_timeout_ms: 2 * request_timeout_ms.max(30_000),
        keep_alive_interval_ms: 300,
        keep_alive_timeout_ms: 300,
        ..ClientConfig::with_endpoints(addr_of.iter().map(|(_, addr)| addr.clone()))
    })
    .unwrap();
    client.create_asset("CREDITS", 0).await.unwrap();
    price_and_fund_acme(&client, thresholds).await;
    let first = client
        .record_usage(usage_event(
            "first-1",
            "acme",
            "tokens",
            quantity,
            tally_tests::now_ms(),
        ))
        .await
        .unwrap();
    assert_eq!(first.kind(), "settled", "{first:?}");
    let leader_addr = client.known_leader().expect("a leader learned");
    let leader = addr_of
        .iter()
        .find(|(_, addr)| *addr == leader_addr)
        .map(|(id, _)| *id)
        .expect("the leader is one of the nodes");
    (cluster, client, leader)
}

/// A node that stops answering without closing its connections (SIGSTOP: its kernel keeps the
/// TCP connection up and even acknowledges what the client sends) is given up by the client's
/// HTTP/2 pings, not at each call's deadline: a usage call sent to the stopped leader moves on
/// to the new leader and settles well inside its own per-attempt deadline of 60 s (without the
/// pings the first attempt alone waits those 60 s: checked).
#[tokio::test]
async fn client_gives_up_a_silent_node_by_its_pings() {
    use tally_client::usage_event;

    let (mut cluster, client, leader) = pinging_client_on_three_nodes(60_000, &[], "1").await;
    let leader_addr = client.known_leader().expect("a leader learned");
    let occurred = tally_tests::now_ms();

    cluster.pause(leader);
    let started = Instant::now();
    let second = client
        .record_usage(usage_event("k-2", "acme", "tokens", "2", occurred))
        .await;
    let took = started.elapsed();
    cluster.resume(leader);
    let second = second.unwrap();
    assert_eq!(second.kind(), "settled", "{second:?}");
    assert!(
        took < Duration::from_secs(30),
        "the call took {took:?}: it waited on the silent connection"
    );
    assert_ne!(client.known_leader(), Some(leader_addr));
    let account = client.get_account("acme").await.unwrap();
    assert_eq!(account.balance, "97");
}

/// A followed event stream served by a node that goes silent (SIGSTOP: the connection stays
/// up, nothing answers) is ended by the client's HTTP/2 pings and resumed on another node from
/// the next sequence number: the events recorded meanwhile arrive, in order, none missed or
/// repeated. Without the pings `next()` waits on the silent node for ever (this test's 60 s).
#[tokio::test]
async fn a_followed_event_stream_resumes_past_a_silent_node() {
    use tally_client::{usage_event, v1};

    // 100 -> 40 crosses the threshold of 50: balance_low, seq 1.
    let (mut cluster, client, leader) = pinging_client_on_three_nodes(3_000, &["50"], "60").await;
    let occurred = tally_tests::now_ms();

    // Opened on the node the client knows as leader.
    let mut events = client.events(1, true);
    let low: v1::LedgerEvent = next_event_within_a_minute(&mut events).await;
    assert_eq!((low.seq, low.kind.as_str()), (1, "balance_low"));

    cluster.pause(leader);
    // Through the new leader: 40 -> 0 (balance_depleted, seq 2), then a grant brings it back
    // above the threshold (balance_recovered, seq 3).
    let second = client
        .record_usage(usage_event("e-2", "acme", "tokens", "40", occurred))
        .await
        .unwrap();
    assert_eq!(second.kind(), "settled", "{second:?}");
    add_purchased_to_acme(&client, "g-2").await;
    let depleted = next_event_within_a_minute(&mut events).await;
    let recovered = next_event_within_a_minute(&mut events).await;
    cluster.resume(leader);
    assert_eq!(
        [
            (depleted.seq, depleted.kind.as_str()),
            (recovered.seq, recovered.kind.as_str())
        ],
        [(2, "balance_depleted"), (3, "balance_recovered")]
    );
    assert_eq!(events.next_seq(), 4);
}

async fn next_event_within_a_minute(
    events: &mut tally_client::EventSubscription,
) -> tally_client::v1::LedgerEvent {
    tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("the subscription delivered nothing within 60 s")
        .unwrap()
        .expect("a followed subscription does not end")
}

/// Ledger events run from seq 1 without gaps on every node; a node missing one (damage: the
/// row is deleted here from its stopped state database) says so, naming the missing seqs, and
/// the subscription hands that error over instead of skipping to the next event it has.
#[tokio::test]
async fn an_event_stream_with_a_missing_event_is_an_error_not_a_skip() {
    use tally_client::{usage_event, Client, ClientConfig};

    let mut cluster = Cluster::start(ClusterSpec {
        voters: 1,
        ..ClusterSpec::default()
    })
    .await;
    let client = Client::new(ClientConfig::with_endpoints([cluster
        .node(1)
        .addrs
        .client
        .clone()]))
    .unwrap();
    client.create_asset("CREDITS", 0).await.unwrap();
    price_and_fund_acme(&client, &["50"]).await;
    let occurred = tally_tests::now_ms();
    // balance_low (seq 1), balance_depleted (seq 2), then the grant's events.
    for (id, quantity) in [("e-1", "60"), ("e-2", "40")] {
        let outcome = client
            .record_usage(usage_event(id, "acme", "tokens", quantity, occurred))
            .await
            .unwrap();
        assert_eq!(outcome.kind(), "settled", "{outcome:?}");
    }
    add_purchased_to_acme(&client, "g-2").await;
    let mut all = client.events(1, false);
    let mut seqs = Vec::new();
    while let Some(event) = all.next().await.unwrap() {
        seqs.push(event.seq);
    }
    assert!(seqs.len() >= 3, "{seqs:?}");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

    // A snapshot syncs the state database, so the restart re-applies nothing of the above.
    let endpoint = cluster.node(1).addrs.client.clone();
    client.trigger_snapshot_at(&endpoint).await.unwrap();
    cluster.stop(1);
    {
        // The event row's key in the state machine's tree: b'e' and the seq, big-endian.
        let db = sled::open(cluster.node(1).data_dir.join("state")).unwrap();
        let state = db.open_tree("sm").unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(&2u64.to_be_bytes());
        assert!(state.remove(key).unwrap().is_some(), "event 2's row");
        db.flush().unwrap();
    }
    cluster.restart(1);
    cluster.wait_ready(1).await;

    let mut events = client.events(1, false);
    let first = events.next().await.unwrap().expect("event 1");
    assert_eq!(first.seq, 1);
    let error = events.next().await.expect_err("event 2 is missing");
    assert_eq!(error.code(), tally_client::ErrorCode::Internal, "{error}");
    assert!(
        error.message().contains("no ledger events 2..=2"),
        "{error}"
    );
}

/// `tally cluster hash` compares the nodes at one log index even while entries keep coming:
/// nodes that stand at different applied indexes are each asked for the hash at one index
/// ahead of them all (answered as each applies it). Before, under steady writes the nodes
/// never lined up, and the command printed "run again" with exit 0, comparing nothing. A node
/// asked for an index it has passed says so, naming `at_index`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_hash_compares_the_nodes_under_steady_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", 1_000_000_000).await;
    let e = &all_endpoints(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tally_tests::spawn_writer(
        cluster.clients(),
        "acme",
        "steady",
        "1",
        Duration::ZERO,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let json = tally(e, &["--json", "cluster", "hash"]).ok().json();
        assert_eq!(json["agree"], true, "{json}");
        let nodes = json["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{json}");
        assert!(
            nodes
                .iter()
                .all(|node| node["applied_index"] == nodes[0]["applied_index"]),
            "{json}"
        );
    }
    tally(e, &["cluster", "hash"]).ok().has("all 3 nodes agree");
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written > 0);

    let client =
        tally_client::Client::new(tally_client::ClientConfig::with_endpoints(e.clone())).unwrap();
    let endpoint = client.endpoints()[0].clone();
    let now = client.state_hash_at(&endpoint).await.expect("hash now");
    let error = client
        .state_hash_at_index(&endpoint, now.applied_index)
        .await
        .expect_err("an index already applied");
    assert_eq!(
        error.details().get("field").map(String::as_str),
        Some("at_index"),
        "{error:?}"
    );

    // Every node stopped and started again (an upgrade): asked as soon as they listen, before
    // any leader is elected, `cluster hash` waits for one (it answered exit 3, `not_leader`).
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    for id in [1, 2, 3] {
        cluster.wait_live(id).await;
    }
    tally(e, &["cluster", "hash"]).ok().has("all 3 nodes agree");
}

/// `cluster snapshot` fails (exit 1) when a node could not build its snapshot (here a directory
/// in the way of its build file; a full disk alike), saying which: the upgrade procedure relies
/// on every node holding one. The node itself goes on serving.
#[tokio::test]
async fn cluster_snapshot_fails_when_a_node_could_not_build_one() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", 1_000_000).await;
    let e = &all_endpoints(&cluster);
    let obstacle = cluster
        .node(2)
        .data_dir
        .join("snapshots/current.snap.build");
    std::fs::create_dir(&obstacle).expect("obstacle");
    let run = tally(e, &["--json", "cluster", "snapshot"]).code(1);
    let json = run.json();
    let nodes = json["nodes"].as_array().expect("nodes");
    let failed: Vec<&Value> = nodes
        .iter()
        .filter(|n| n.get("not_built").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(
        failed[0]["endpoint"],
        cluster.node(2).addrs.client,
        "{json}"
    );
    assert!(
        s(failed[0], "not_built").contains("see node 2's log"),
        "{json}"
    );
    assert!(nodes
        .iter()
        .filter(|n| n.get("not_built").is_none())
        .all(|n| n["snapshot_index"].as_u64().unwrap() > 0));
    // Still serving.
    cluster.account("acme").await;
}
