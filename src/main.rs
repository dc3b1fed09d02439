//! The `occy` binary: parses the command line, sets up logging and the
//! runtime, runs the command, and maps errors to exit codes (docs/architecture.md).

use std::time::Duration;

use occy::cli;
use occy::error::Error;

fn init_logging(verbose: u8, quiet: bool, ansi: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,occy=info",
        (false, 1) => "info,occy=debug",
        (false, _) => "debug,occy=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .init();
}

fn main() {
    // `occy info … | head` should end quietly, like other Unix tools, not
    // panic on a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cli::parse();
    let format = cli.global.output_format;
    let ansi = cli.global.colour(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    init_logging(cli.global.verbose, cli.global.quiet, ansi);
    // The runtime's threads do the network I/O: a connection the peer
    // reset while a request body is being written (writev, which cannot say
    // MSG_NOSIGNAL) must be an EPIPE error there, retried or resumed, not a
    // SIGPIPE that kills occy. The main thread keeps SIGPIPE for `| head`.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(block_sigpipe_in_this_thread)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    // Ctrl-C (SIGINT) trips the run's switch, which stops the blocking
    // readers at once, and drops the command's future: every sink, spool and
    // temporary file it owns is dropped, which removes the temporary files;
    // nothing half-written was ever under a final name.
    let result = runtime.block_on(async {
        tokio::select! {
            result = cli::run(cli) => result,
            () = interrupted() => {
                occy::interrupt::interrupt();
                Err(Error::Interrupted)
            }
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            if matches!(e, Error::Interrupted) || occy::interrupt::is_interrupted() {
                // The blocking readers end before the runtime they read
                // through goes away; other blocking work in flight (a file
                // being renamed into place, a temporary directory being
                // removed) ends before we do.
                runtime.block_on(occy::interrupt::settle(Duration::from_secs(5)));
                runtime.shutdown_timeout(Duration::from_secs(5));
                eprintln!("error: {}", Error::Interrupted);
                std::process::exit(Error::Interrupted.exit_code());
            }
            cli::report_error(&e, format);
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// Blocks SIGPIPE for the calling thread: a write to a closed socket there
/// fails with EPIPE instead.
fn block_sigpipe_in_this_thread() {
    #[cfg(unix)]
    // SAFETY: a zeroed sigset_t is valid storage for sigemptyset, and
    // pthread_sigmask only changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Resolves on the first Ctrl-C (SIGINT); never when no handler can be installed.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
