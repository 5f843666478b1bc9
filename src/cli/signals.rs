//! Ctrl-C (SIGINT) and SIGTERM end a run with one line on stderr and the
//! conventional status (130, 143), and leave no temporary file behind: an
//! output is either not there, or complete (written whole, then renamed:
//! `output_file::AtomicFile`, which lists its temporary files here while
//! they exist).
//!
//! The two signals are blocked in every thread (threads inherit the mask,
//! so libtorch's too) and waited for on one thread of ours, which removes
//! the listed files and ends the process with `_exit`: no destructor of
//! libtorch's runs half-way through a step. The first signal ends the run
//! at once, so a second one has nothing left to wait for.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TEMPORARY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Lists a temporary file, to be removed if a signal ends the run.
pub fn track(path: &Path) {
    TEMPORARY.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_path_buf());
}

/// Unlists a temporary file (renamed into place, or removed).
pub fn untrack(path: &Path) {
    TEMPORARY.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != path);
}

/// The two signals, as a set.
fn signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local, zero-initialized sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks the two signals in the calling thread (and so in every thread it
/// starts afterwards).
fn block() -> libc::sigset_t {
    let set = signals();
    // SAFETY: `set` is initialized; the old mask is not asked for.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}

/// Blocks the signals before `main`, before libtorch's static initializers
/// run: the dynamic loader calls an executable's `.preinit_array` before the
/// initializers of any shared library (registering libtorch's operators
/// takes about 0.3 s of a 0.5 s run here, and a signal then used to end the
/// process by its default action, with no line). A signal that arrives now
/// stays pending until [`install`]'s thread takes it. What is left unguarded
/// is the loader mapping and relocating the libraries, before any code of
/// the program can run (about 40 ms; docs/guide.md, errors).
#[used]
#[link_section = ".preinit_array"]
static BLOCK_BEFORE_LIBRARIES: extern "C" fn() = block_before_libraries;

extern "C" fn block_before_libraries() {
    block();
}

/// Blocks SIGINT and SIGTERM (already blocked since before the libraries'
/// initializers, see [`BLOCK_BEFORE_LIBRARIES`]) and starts the thread that
/// waits for them, which also takes one that arrived before `main`. Call it
/// first in `main`, before any other thread of ours exists.
pub fn install() {
    let set = block();
    std::thread::spawn(move || loop {
        let mut signal = 0;
        // SAFETY: `set` is initialized above; `signal` is a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
            end(signal);
        }
    });
}

fn end(signal: i32) -> ! {
    for path in TEMPORARY.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = std::fs::remove_file(path);
    }
    let name = if signal == libc::SIGINT { "SIGINT (Ctrl-C)" } else { "SIGTERM" };
    eprintln!("error: stopped by {name}; outputs not yet written were not written");
    // SAFETY: _exit ends the process without running destructors.
    unsafe { libc::_exit(128 + signal) }
}
