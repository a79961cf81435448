//! tally-cli: the `tally` command line (the binary is a thin `main` over [`run`]).
//!
//! # Public API
//! - [`run`]`(args) -> ExitCode`: parses the command line (clap), validates every value before
//!   any request (bad values name the flag), runs the command through `tally-client` and
//!   prints the result. Exit status: 0 ok, 1 refused by the ledger (including a rejected or
//!   conflicting usage event, a failed hash comparison), 2 bad command line or value
//!   (including what the client's own request checks refuse), 3 cluster unreachable or outcome
//!   unknown (retrying the same command is safe, except `usage record` without `--event-id`
//!   and `--occurred-at`, whose error names the event to retry).
//! - [`args::Cli`]: the command tree (asset, account (incl. update), grant, price, usage, hold, report,
//!   history, events, cluster, demo) and the global flags `--endpoint ADDR` (repeatable or
//!   comma-separated; env `TALLY_ENDPOINT`; default the `make run` cluster on
//!   127.0.0.1:7101..7103), `--json`, `--timeout DURATION`.
//! - Output: with `--json` one JSON object per command on stdout (snake_case, amounts as
//!   decimal strings, times RFC 3339; an error is `{"error": {code, message, details}}`);
//!   `events --follow --json` prints one object per event. Without `--json`: aligned tables,
//!   errors on stderr as `error: <code>: <sentence>`.
//! - [`rates`]: the rates-file format of `price publish` (also what `price show --json` prints).
//! - [`values`]: the flag value parsers (RFC 3339 times with any offset, durations `90s` `10m`
//!   `24h`, exact amounts, checked ids, `K=V`).

pub mod args;
mod cluster;
mod demo;
mod ledger;
pub mod output;
pub mod rates;
mod usage;
pub mod values;
mod views;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use tally_client::{Client, ClientConfig};

use crate::args::{Cli, Command, UsageCommand};
use crate::output::{Failure, Output, EXIT_USAGE};

/// Runs the CLI on `args` (the program name first) and returns the exit status.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() && asks_for_json(&args) => {
            // A script asked for JSON: the same `{"error": ...}` object as every other
            // refusal, naming the argument, not clap's text on stderr.
            Output { json: true }.failure(&parse_failure(&error));
            return ExitCode::from(EXIT_USAGE);
        }
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let out = Output { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            out.failure(&Failure::refused(
                "internal",
                format!("cannot start the async runtime: {error}"),
            ));
            return ExitCode::from(output::EXIT_REFUSED);
        }
    };
    match runtime.block_on(execute(cli, out)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            out.failure(&failure);
            ExitCode::from(failure.exit)
        }
    }
}

/// Whether `--json` is among the arguments (before a `--` that ends the options).
fn asks_for_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|arg| arg.as_os_str() != "--")
        .any(|arg| arg.as_os_str() == "--json")
}

/// A command line clap refused, as the `invalid_argument` failure `--json` prints: the
/// argument it names (`--quantity <QUANTITY>`, `<ID>`) and clap's sentence.
fn parse_failure(error: &clap::Error) -> Failure {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
    ) {
        // Rendered, this is the help text; its first line is the command's description.
        let reason = "a subcommand is required; add --help to list them";
        let mut failure = Failure::usage("<COMMAND>", reason);
        failure.message = reason.to_string();
        return failure;
    }
    let rendered = error.render().to_string();
    let sentence = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    let field = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        Some(ContextValue::Strings(args)) => args.join(", "),
        _ => String::new(),
    };
    // A sentence that ends in a colon lists its arguments on the lines below it (missing
    // required arguments): name them in the message too, not only in `field`.
    let sentence = match sentence.strip_suffix(':') {
        Some(head) if !field.is_empty() => format!("{head}: {field}"),
        _ => sentence,
    };
    let mut failure = Failure::usage(&field, &sentence);
    failure.message = sentence;
    if field.is_empty() {
        failure.details.remove("field");
    }
    failure
}

fn client_for(cli: &Cli) -> Result<Client, Failure> {
    let config = ClientConfig {
        endpoints: cli.endpoints.clone(),
        request_timeout_ms: cli.timeout,
        // Room for a leader election or two inside one command.
        call_timeout_ms: (cli.timeout * 3).max(30_000),
        // About 8 s of backoff in all: enough to ride out an election, short enough that a
        // person at a dead cluster hears about it quickly.
        attempts_max: 15,
        ..ClientConfig::default()
    };
    Client::new(config).map_err(|error| Failure::usage("--endpoint", error.message()))
}

async fn execute(cli: Cli, out: Output) -> Result<u8, Failure> {
    let client = client_for(&cli)?;
    match cli.command {
        Command::Asset(command) => ledger::asset(&client, out, command).await,
        Command::Account(command) => ledger::account(&client, out, command).await,
        Command::Grant(command) => ledger::grant(&client, out, command).await,
        Command::Price(command) => ledger::price(&client, out, command).await,
        Command::Usage(UsageCommand::Record(args)) => usage::record(&client, out, args).await,
        Command::Usage(UsageCommand::Import {
            file,
            batch,
            batch_bytes,
            atomic,
            in_flight,
        }) => {
            let batches = usage::Batches {
                events_max: batch as usize,
                bytes_max: batch_bytes as usize,
                atomic,
                in_flight: in_flight as usize,
            };
            usage::import(&client, out, &file, batches).await
        }
        Command::Hold(command) => ledger::hold(&client, out, command).await,
        Command::Report(args) => ledger::report(&client, out, args).await,
        Command::History(args) => ledger::history(&client, out, args).await,
        Command::Events(args) => ledger::events(&client, out, args).await,
        Command::Cluster(command) => cluster::cluster(&client, out, command).await,
        Command::Demo(args) => demo::demo(&client, out, args).await,
    }
}
