//! The `tally` binary: everything lives in the library (`tally_cli::run`).

fn main() -> std::process::ExitCode {
    quiet_on_closed_pipe();
    tally_cli::run(std::env::args_os())
}

/// `tally cluster status | head -3` ends quietly, as other command-line tools do, when the
/// reader goes away: Rust starts programs with SIGPIPE ignored, so a write to a closed pipe
/// would fail and `println!` panic instead.
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    // SAFETY: signal(2) with SIG_DFL only resets the disposition; it runs before any thread
    // starts and touches no memory of this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
