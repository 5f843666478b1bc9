//! `cross-entropy-tch`: the example as a command; see `--help`.

mod cli;

use clap::Parser;
use cli::args::Cli;
use cli::config::UsageError;
use std::process::ExitCode;

/// jemalloc for the whole process (feature `jemalloc`, on by default): its
/// `malloc`/`free` are unprefixed, so libtorch's C++ allocations (tensor
/// handles, autograd nodes, dispatcher state) use it too, not only ours.
#[cfg(all(feature = "jemalloc", target_os = "linux", target_arch = "x86_64"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (its `malloc_conf`; the `MALLOC_CONF` environment
/// variable still overrides them): freed pages stay with the process for the
/// next step instead of going back to the OS, and large blocks (a 4096x1000
/// gradient is 16 MB) come from the same arenas instead of the oversize one,
/// which returns them at once. Without this every step page-faults its large
/// tensors in again (293 k minor faults against 79 k for 12 steps at
/// 4096x1024->1000, up to 20% slower).
#[cfg(all(feature = "jemalloc", target_os = "linux", target_arch = "x86_64"))]
#[export_name = "malloc_conf"]
static JEMALLOC_CONF: &[u8; 57] = b"oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

fn main() -> ExitCode {
    // Before any other thread: SIGINT/SIGTERM end the run cleanly (130, 143).
    cli::signals::install();
    // A bug of ours should still read as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let first_line = message.lines().next().unwrap_or("");
        let place = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
        eprintln!("error: internal error{place}: {first_line} (please report this)");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version: stdout, status 0 (and quiet if stdout is closed).
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's first paragraph names the flag and the problem (on one
            // line, or a line and an indented list); its usage block and tips
            // would only bury it.
            let rendered = e.render().to_string();
            let first = rendered.split("\n\n").next().unwrap_or("error: bad arguments");
            let line: Vec<&str> = first.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("{} (see --help)", line.join(" "));
            return ExitCode::from(2);
        }
    };
    match cli::run::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`| head`) is the reader saying it has enough, as
        // for cat and ripgrep: end quietly.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // `train --nproc`: the failed rank said why; its status is ours.
        Err(e) if e.downcast_ref::<cli::launch::RankFailed>().is_some() => {
            ExitCode::from(e.downcast_ref::<cli::launch::RankFailed>().map_or(1, |f| f.0))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if UsageError::is_in(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
