//! The `tally` binary: everything lives in the library (`tally_cli::run`).

fn main() -> std::process::ExitCode {
    tally_cli::run(std::env::args_os())
}
