//! The `tally` binary: everything lives in the library (`tally_cli::run`).

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
    tally_cli::run(std::env::args_os())
}

/// `tally cluster status | head -3` ends quietly, as other command-line tools do, when the
/// reader of its output goes away: `println!` panics on a closed stdout, and that one panic
/// exits 141 (what a shell shows for a closed pipe) without a message. SIGPIPE itself stays
/// ignored, as Rust sets it: the HTTP/2 connections write with `writev`, and a node that
/// resets its connection must fail the call (to be retried elsewhere), not kill the process.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}
