//! Output files written all at once: a temporary file next to the final
//! path, renamed into place, so nobody ever sees half a file.

use super::signals;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An output file written all at once. [`create`](Self::create) proves,
/// when the run starts, that a temporary file can be made next to the final
/// path (and removes it again), so an unwritable path fails before any work
/// and an interrupted run leaves nothing. [`commit`](Self::commit) writes
/// the temporary file and renames it into place, so no reader ever sees a
/// truncated file; if that fails, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Checks that `path` can be written, by creating its temporary file now.
    /// `flag` names the option in error messages (`--save`).
    pub fn create(path: &Path, flag: &str) -> Result<AtomicFile> {
        let shown = path.display();
        if path.is_dir() {
            anyhow::bail!("{flag} {shown}: is a directory, expected a file path");
        }
        let name = path
            .file_name()
            .with_context(|| format!("{flag} {shown}: expected a file path"))?
            .to_string_lossy();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let prefix = format!(".{name}.tmp-");
        remove_orphans(dir, &prefix);
        let tmp = dir.join(format!("{prefix}{}", std::process::id()));
        signals::track(&tmp);
        let probe = std::fs::File::create(&tmp)
            .with_context(|| format!("{flag} {shown}: cannot write in {}", dir.display()));
        let _ = std::fs::remove_file(&tmp);
        signals::untrack(&tmp);
        probe?;
        Ok(AtomicFile { path: path.to_path_buf(), tmp, committed: false })
    }

    /// Writes `bytes` to the temporary file, flushes it to disk and renames
    /// it to the final path.
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        self.replace(bytes)?;
        self.committed = true;
        Ok(())
    }

    /// [`commit`](Self::commit), but the file stays open for more versions
    /// (a resume checkpoint written every N epochs): each one replaces the
    /// last whole, by rename, so the path always holds a complete file.
    pub fn replace(&self, bytes: &[u8]) -> Result<()> {
        let shown = self.path.display().to_string();
        signals::track(&self.tmp);
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&self.tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            commit_pause();
            std::fs::rename(&self.tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        signals::untrack(&self.tmp);
        written.with_context(|| format!("writing {shown}"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes `dir/PREFIXPID` files whose process is gone: what a run killed
/// by SIGKILL (which no handler sees) left behind. A file whose PID is alive
/// (another run writing the same path, or a reused PID) is left alone.
fn remove_orphans(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else { continue };
        let Ok(pid) = pid.parse::<libc::pid_t>() else { continue };
        if pid > 0 && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` exists (signal 0 checks without sending; EPERM
/// means it exists but belongs to someone else).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 sends nothing.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A test hook: `CE_COMMIT_PAUSE_MS=N` waits N ms between writing a
/// temporary file and renaming it, so that a test can send a signal inside
/// that window (`tests/signals.rs`). Unset, it costs one cached lookup.
fn commit_pause() {
    static PAUSE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let pause = PAUSE.get_or_init(|| std::env::var("CE_COMMIT_PAUSE_MS").ok()?.parse().ok());
    if let Some(ms) = pause {
        std::thread::sleep(std::time::Duration::from_millis(*ms));
    }
}
