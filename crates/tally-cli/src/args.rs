//! The command line, declared with clap: global flags, commands and their flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::values::*;

#[derive(Parser, Debug)]
#[command(
    name = "tally",
    version,
    about = "Tally: a real-time usage ledger. Ledger commands for users, cluster commands for operators.",
    after_help = "TIME is RFC 3339 (2026-01-31T12:00:00Z); DURATION is like 90s, 10m, 24h; amounts are exact decimals (12.50).\nExit status: 0 ok, 1 refused by the ledger, 2 bad command line, 3 cluster unreachable, outcome unknown, or a learner not caught up yet (retry)."
)]
pub struct Cli {
    /// A node's client address, host:port. Repeat (or separate with commas) to give several;
    /// the client finds the leader among them.
    #[arg(
        long = "endpoint",
        global = true,
        value_name = "ADDR",
        value_delimiter = ',',
        value_parser = parse_endpoint,
        env = "TALLY_ENDPOINT",
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    pub endpoints: Vec<String>,

    /// Print one JSON object per command (snake_case fields, amounts as decimal strings).
    #[arg(long, global = true)]
    pub json: bool,

    /// Deadline of each request attempt.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or list assets (the units balances are held in).
    #[command(subcommand)]
    Asset(AssetCommand),
    /// Create, show, freeze, unfreeze or close accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Add or void grants (allowances, promotional credit, purchased top-ups).
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Publish or show price books.
    #[command(subcommand)]
    Price(PriceCommand),
    /// Record usage events, one or a file of them.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Reserve value before long work, release what is left.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Usage, revenue, cost and margin of an account or of the whole ledger.
    Report(ReportArgs),
    /// An account's journal entries, newest first.
    History(HistoryArgs),
    /// Ledger events (low balance, expiries...) from a sequence number on.
    Events(EventsArgs),
    /// Operate the cluster: status, membership, snapshots, state hashes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The product demo against a running cluster (what `make demo` runs).
    Demo(DemoArgs),
}

#[derive(Subcommand, Debug)]
pub enum AssetCommand {
    /// Create an asset; creating it again with the same scale changes nothing.
    Create {
        /// Asset code, [A-Z0-9_]{1,16}, e.g. CREDITS or USD.
        #[arg(value_parser = parse_asset_code)]
        code: String,
        /// Digits after the point, 0..=18.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=18))]
        scale: u32,
    },
    /// List every asset.
    List,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Create an account (one customer balance in one asset).
    Create(AccountCreateArgs),
    /// Change an account's settings; what is not given stays as it is.
    Update(AccountUpdateArgs),
    /// Balance, available, held, debt, grants and holds of an account.
    Show {
        #[arg(value_parser = parse_account_id)]
        id: String,
    },
    /// Refuse usage on the account until it is unfrozen.
    Freeze {
        #[arg(value_parser = parse_account_id)]
        id: String,
    },
    /// Make a frozen account active again.
    Unfreeze {
        #[arg(value_parser = parse_account_id)]
        id: String,
    },
    /// Close the account for good.
    Close {
        #[arg(value_parser = parse_account_id)]
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct AccountCreateArgs {
    #[arg(value_parser = parse_account_id)]
    pub id: String,
    /// The asset the balance is held in.
    #[arg(long, value_parser = parse_asset_code)]
    pub asset: String,
    /// How far the balance may go below zero (default 0: hard stop).
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_non_negative)]
    pub credit_limit: Option<String>,
    /// Reporting currency per unit of the asset, for the revenue of usage that goes into debt
    /// (default 1 for the reporting currency, 0 for any other asset: set it with --credit-limit).
    #[arg(long, value_name = "P", allow_hyphen_values = true, value_parser = parse_amount_non_negative)]
    pub list_price: Option<String>,
    /// The price book that prices this account's usage.
    #[arg(long, value_name = "BOOK", value_parser = parse_book_id)]
    pub price_book: Option<String>,
    /// A low-balance threshold (repeatable, at most 16).
    #[arg(long = "threshold", value_name = "A", allow_hyphen_values = true, value_parser = parse_amount)]
    pub thresholds: Vec<String>,
    /// Ask for a recharge when the balance drops below this.
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount, requires = "auto_recharge_amount")]
    pub auto_recharge_below: Option<String>,
    /// How much to ask for.
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_positive, requires = "auto_recharge_below")]
    pub auto_recharge_amount: Option<String>,
    /// A metadata pair (repeatable, at most 16).
    #[arg(long = "metadata", value_name = "K=V", value_parser = parse_pair)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct AccountUpdateArgs {
    #[arg(value_parser = parse_account_id)]
    pub id: String,
    #[arg(long, value_name = "BOOK", value_parser = parse_book_id, conflicts_with = "clear_price_book")]
    pub price_book: Option<String>,
    /// The account no longer uses a price book.
    #[arg(long)]
    pub clear_price_book: bool,
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_non_negative)]
    pub credit_limit: Option<String>,
    #[arg(long, value_name = "P", allow_hyphen_values = true, value_parser = parse_amount_non_negative)]
    pub list_price: Option<String>,
    /// Replaces every threshold (repeatable).
    #[arg(long = "threshold", value_name = "A", allow_hyphen_values = true, value_parser = parse_amount, conflicts_with = "clear_thresholds")]
    pub thresholds: Vec<String>,
    /// Removes every threshold.
    #[arg(long)]
    pub clear_thresholds: bool,
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount, requires = "auto_recharge_amount", conflicts_with = "clear_auto_recharge")]
    pub auto_recharge_below: Option<String>,
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_positive, requires = "auto_recharge_below")]
    pub auto_recharge_amount: Option<String>,
    /// Turns auto-recharge off.
    #[arg(long)]
    pub clear_auto_recharge: bool,
    /// Replaces all metadata (repeatable).
    #[arg(long = "metadata", value_name = "K=V", value_parser = parse_pair)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Category {
    Allowance,
    Promotional,
    Purchased,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Period {
    Day,
    Week,
    Month,
}

#[derive(Subcommand, Debug)]
pub enum GrantCommand {
    /// Add value to an account.
    Add(GrantAddArgs),
    /// Zero a grant's remaining value.
    Void {
        #[arg(value_parser = parse_account_id)]
        account: String,
        #[arg(value_parser = parse_grant_id)]
        id: String,
        /// Why (kept in the journal).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args, Debug)]
pub struct GrantAddArgs {
    #[arg(value_parser = parse_account_id)]
    pub account: String,
    /// Grant id, unique within the account.
    #[arg(long, value_parser = parse_grant_id)]
    pub id: String,
    #[arg(long, value_enum)]
    pub category: Category,
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_positive)]
    pub amount: String,
    /// 0..=100, lower is drawn first (default from the category: 10, 20, 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub priority: Option<u32>,
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub starts_at: Option<u64>,
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub expires_at: Option<u64>,
    /// Allowances only: reset to the full amount every period, counted from its start (a
    /// monthly allowance started on the 29th resets on the 29th, or a shorter month's last day).
    #[arg(long, value_enum)]
    pub reset_every: Option<Period>,
    /// Allowances with a reset only: most unused value carried into the next period.
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_non_negative, requires = "reset_every")]
    pub rollover_max: Option<String>,
    /// What the customer paid, in the reporting currency (required for purchased).
    #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_non_negative)]
    pub paid: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PriceCommand {
    /// Publish a new version of a price book from a rates file.
    Publish {
        #[arg(value_parser = parse_book_id)]
        book: String,
        #[arg(long, value_parser = parse_asset_code)]
        asset: String,
        /// {"rates": [{"meter": "tokens", "match": {"model": "m1"}, "per_unit": {"unit_price": "0.002", "per": "1"}}]}
        #[arg(long, value_name = "RATES.json")]
        file: PathBuf,
        /// When the version takes effect (default now; not in the past).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        effective_at: Option<u64>,
    },
    /// Show the version of a price book in force now (or at --at).
    Show {
        #[arg(value_parser = parse_book_id)]
        book: String,
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<u64>,
    },
    /// Show the version of the ledger-wide cost book in force now (or at --at).
    ShowCosts {
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<u64>,
    },
    /// Publish a new version of the ledger-wide cost book (what usage costs the operator).
    PublishCosts {
        /// Same format as a price book's rates file; prices in the reporting currency.
        #[arg(long, value_name = "RATES.json")]
        file: PathBuf,
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        effective_at: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UsageCommand {
    /// Record one usage event.
    Record(UsageRecordArgs),
    /// Record every event of a JSON-lines file, in batches.
    Import {
        /// One event per line: {"account", "meter", "quantity", "event_id"?, "dimensions"?:
        /// {K: V}, "occurred_at"?: TIME, "cost"?, "hold"?}; amounts are strings. Without
        /// event_id, one is derived from the line's number and text, so importing the same
        /// file again settles nothing twice (with occurred_at in every line the second import
        /// answers duplicate; without it, the time defaults to now and the answer is conflict).
        #[arg(value_name = "FILE.jsonl")]
        file: PathBuf,
        /// Events per batch (one log entry each), 1..=8190.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=8190))]
        batch: u64,
        /// Bytes per batch request, at least 1024: a batch is cut before it would pass this
        /// (events with long ids or many dimensions). The cluster's limits.request_bytes_max
        /// (4 MiB by default).
        #[arg(long, value_name = "BYTES", default_value_t = 4_194_304, value_parser = clap::value_parser!(u64).range(1024..=67_108_864))]
        batch_bytes: u64,
        /// Each batch settles all or nothing.
        #[arg(long)]
        atomic: bool,
        /// Batches sent concurrently, 1..=64. More is faster; with 1 the events settle in
        /// file order (which matters when an account runs out of funds).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
        in_flight: u64,
    },
}

#[derive(Args, Debug)]
pub struct UsageRecordArgs {
    #[arg(value_parser = parse_account_id)]
    pub account: String,
    #[arg(long, value_name = "M", value_parser = parse_meter)]
    pub meter: String,
    #[arg(long, value_name = "Q", allow_hyphen_values = true, value_parser = parse_amount_non_negative)]
    pub quantity: String,
    /// A dimension (repeatable), e.g. --dim model=m1.
    #[arg(long = "dim", value_name = "K=V", value_parser = parse_pair)]
    pub dims: Vec<(String, String)>,
    /// Unique per account; a retry must reuse it (and the same --occurred-at). Generated and
    /// printed when not given.
    #[arg(long, value_name = "ID", value_parser = parse_event_id)]
    pub event_id: Option<String>,
    /// What the event cost the operator, in the reporting currency.
    #[arg(long, value_name = "C", allow_hyphen_values = true, value_parser = parse_amount_non_negative)]
    pub cost: Option<String>,
    /// Draw from this hold first.
    #[arg(long, value_name = "ID", value_parser = parse_hold_id)]
    pub hold: Option<String>,
    /// When it happened (default now). Part of the event: a retry must send the same value.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub occurred_at: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Reserve value on an account.
    Authorize {
        #[arg(value_parser = parse_account_id)]
        account: String,
        #[arg(long, value_parser = parse_hold_id)]
        id: String,
        #[arg(long, value_name = "A", allow_hyphen_values = true, value_parser = parse_amount_positive)]
        amount: String,
        /// 1s..=24h.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: u64,
    },
    /// Free what a hold still reserves.
    Release {
        #[arg(value_parser = parse_account_id)]
        account: String,
        #[arg(value_parser = parse_hold_id)]
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Without an account: the whole ledger.
    #[arg(value_parser = parse_account_id)]
    pub account: Option<String>,
    /// A calendar month (UTC), YYYY-MM; default all time.
    #[arg(long, value_parser = parse_month)]
    pub month: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(value_parser = parse_account_id)]
    pub account: String,
    /// Entries to show, 1..=1000.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only entries before this sequence number (the next page).
    #[arg(long, value_name = "SEQ")]
    pub before: Option<u64>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// First sequence number wanted (events are numbered from 1).
    #[arg(long = "from", value_name = "SEQ", default_value_t = 1)]
    pub from_seq: u64,
    /// Keep waiting for new events (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// What every given endpoint reports: role, term, leader, log indexes.
    Status,
    /// Add a node as a learner (it receives the log, does not vote).
    AddLearner {
        /// The new node's id (1 or more).
        #[arg(value_parser = parse_node_id)]
        id: u64,
        /// Its peer (Raft) address, host:port.
        #[arg(value_parser = parse_endpoint)]
        addr: String,
        /// Answer at once instead of waiting until the learner has caught up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner's node id (1 or more).
        #[arg(value_parser = parse_node_id)]
        id: u64,
    },
    /// Remove a voter or learner.
    Remove {
        /// The node's id (1 or more).
        #[arg(value_parser = parse_node_id)]
        id: u64,
    },
    /// Build a snapshot now on every given endpoint.
    Snapshot,
    /// The state hash of every given endpoint, and whether they agree.
    Hash,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Customers to create.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub customers: u64,
    /// Usage events to stream in total.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..=1000000))]
    pub events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=8190))]
    pub batch: u64,
    /// Pause after each progress table, so that a person can watch the numbers move.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "700ms")]
    pub pause: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tally").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags() {
        let cli = parse(&["account", "show", "acme"]).unwrap();
        assert_eq!(
            cli.endpoints,
            ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
        );
        assert!(!cli.json);
        assert_eq!(cli.timeout, 10_000);
        let cli = parse(&[
            "--endpoint",
            "10.0.0.1:7101,10.0.0.2:7101",
            "--endpoint",
            "http://10.0.0.3:7101",
            "account",
            "show",
            "acme",
            "--json",
            "--timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(
            cli.endpoints,
            ["10.0.0.1:7101", "10.0.0.2:7101", "10.0.0.3:7101"]
        );
        assert!(cli.json);
        assert_eq!(cli.timeout, 2_000);
    }

    #[test]
    fn values_are_parsed_and_checked() {
        let cli = parse(&[
            "usage",
            "record",
            "acme",
            "--meter",
            "tokens",
            "--quantity",
            "1.50",
            "--dim",
            "model=m1",
            "--dim",
            "region=eu",
            "--occurred-at",
            "2026-01-31T12:00:00Z",
        ])
        .unwrap();
        match cli.command {
            Command::Usage(UsageCommand::Record(args)) => {
                assert_eq!(args.quantity, "1.5");
                assert_eq!(args.dims.len(), 2);
                assert_eq!(
                    args.occurred_at,
                    crate::values::parse_time("2026-01-31T12:00:00Z").ok()
                );
                assert!(args.event_id.is_none());
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "hold",
            "authorize",
            "acme",
            "--id",
            "h",
            "--amount",
            "5",
            "--expires-in",
            "90s",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Hold(HoldCommand::Authorize {
                expires_in: 90_000,
                ..
            })
        ));
        for bad in [
            &[
                "grant",
                "add",
                "a",
                "--id",
                "g",
                "--category",
                "x",
                "--amount",
                "1",
            ][..],
            &[
                "grant",
                "add",
                "a",
                "--id",
                "g",
                "--category",
                "allowance",
                "--amount",
                "0",
            ],
            &["usage", "record", "a", "--meter", "t", "--quantity", "-1"],
            &[
                "account",
                "create",
                "a",
                "--asset",
                "USD",
                "--auto-recharge-amount",
                "5",
            ],
            &[
                "grant",
                "add",
                "a",
                "--id",
                "g",
                "--category",
                "allowance",
                "--amount",
                "1",
                "--rollover-max",
                "1",
            ],
            &["usage", "import", "f.jsonl", "--batch", "8191"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_ne!(error.kind(), clap::error::ErrorKind::DisplayHelp, "{bad:?}");
        }
    }
}
