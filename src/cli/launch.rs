//! `train --nproc N`: N ranks of this same command line on this machine,
//! started the way `torchrun --nproc-per-node N` starts them (RANK,
//! LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT,
//! OMP_NUM_THREADS=1 unless set), gloo on the loopback. The launcher itself
//! joins no group: it waits, and when a rank fails it gives the others a
//! few seconds to fail on their own (a collective with a dead peer ends at
//! once), then kills what is left, and exits with the first failure's
//! status. Each rank prints its own error line.

use anyhow::{Context, Result};
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The launcher's way out: the status of the rank that failed first (its
/// line is already on stderr).
#[derive(Debug)]
pub struct RankFailed(pub u8);

impl std::fmt::Display for RankFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a rank failed with status {}", self.0)
    }
}

impl std::error::Error for RankFailed {}

/// The arguments after the program name, without `--nproc N`.
fn rank_args() -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--nproc" {
            args.next();
        } else if !a.to_string_lossy().starts_with("--nproc=") {
            out.push(a);
        }
    }
    out
}

fn status_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(1, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(1, 255) as u8,
        _ => 1,
    }
}

/// Starts the ranks and waits for them.
pub fn launch(nproc: usize) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port on 127.0.0.1 for the ranks' store")?
        .port();
    let exe = std::env::current_exe().context("finding this program's path")?;
    let args = rank_args();
    let mut ranks: Vec<Option<Child>> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        if std::env::var_os("GLOO_SOCKET_IFNAME").is_none() {
            cmd.env("GLOO_SOCKET_IFNAME", "lo");
        }
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", "1"); // as torchrun does
        }
        // SAFETY: prctl only, async-signal-safe: a rank dies with the launcher.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => ranks.push(Some(child)),
            Err(e) => {
                kill_all(&mut ranks);
                return Err(e).with_context(|| format!("starting rank {rank} ({})", exe.display()));
            }
        }
    }
    let mut failed: Option<(u8, Instant)> = None;
    loop {
        let mut running = 0;
        for slot in ranks.iter_mut() {
            let Some(child) = slot else { continue };
            match child.try_wait() {
                Ok(Some(status)) => {
                    *slot = None;
                    if !status.success() && failed.is_none() {
                        failed = Some((status_code(status), Instant::now()));
                    }
                }
                Ok(None) => running += 1,
                Err(_) => *slot = None,
            }
        }
        if running == 0 {
            break;
        }
        if failed.is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(5)) {
            kill_all(&mut ranks);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match failed {
        Some((code, _)) => Err(RankFailed(code).into()),
        None => Ok(()),
    }
}

fn kill_all(ranks: &mut [Option<Child>]) {
    for child in ranks.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
