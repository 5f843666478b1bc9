//! Ctrl-C (SIGINT) and SIGTERM at many moments of a run, the final writes
//! included: the run ends with status 130 or 143 and one line on stderr
//! (or, signalled too late, finishes with 0), leaves no temporary file, and
//! each output path holds nothing or a complete file, never a part.
//!
//! `CE_COMMIT_PAUSE_MS` (a test hook of `output_file.rs`) holds each
//! temporary file 150 ms before its rename, so that the writes, which take
//! microseconds in a real run, are a window the signals can hit.

mod common;
use common::*;
use cross_entropy_tch::checkpoint::Checkpoint;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every output in `dir` is absent or whole; no temporary file is left.
fn assert_outputs_whole(dir: &Path, what: &str) -> usize {
    let mut whole = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.contains(".tmp-"), "{what}: a temporary file is left: {name}");
    }
    let path = |n: &str| dir.join(n);
    if path("s.safetensors").exists() {
        Checkpoint::read(&path("s.safetensors")).unwrap_or_else(|e| panic!("{what}: --save: {e}"));
        whole += 1;
    }
    if path("c.safetensors").exists() {
        cross_entropy_tch::resume::read(&path("c.safetensors"))
            .unwrap_or_else(|e| panic!("{what}: --checkpoint: {e}"));
        whole += 1;
    }
    if path("m.csv").exists() {
        let csv = std::fs::read_to_string(path("m.csv")).unwrap();
        assert_eq!(csv.lines().count(), 21, "{what}: --metrics-csv has a header and 20 epochs");
        whole += 1;
    }
    if path("p.svg").exists() {
        let svg = std::fs::read_to_string(path("p.svg")).unwrap();
        assert!(svg.trim_end().ends_with("</svg>"), "{what}: --plot is cut short");
        whole += 1;
    }
    whole
}

#[test]
fn signals_at_any_moment_leave_whole_files_or_none() {
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("signals");
    let _ = std::fs::remove_dir_all(&base);
    let args = [
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "20",
        "--batch-size",
        "64",
        "--quiet",
        "--device",
        "cpu",
        "--save",
        "s.safetensors",
        "--checkpoint",
        "c.safetensors",
        "--checkpoint-every",
        "4",
        "--metrics-csv",
        "m.csv",
        "--plot",
        "p.svg",
    ];
    let (mut stopped, mut during_writes, mut finished, mut early) = (0, 0, 0, 0);
    for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        for delay_ms in [0u64, 150, 400, 700, 1000, 1300, 1600, 1900, 2200, 2600, 3000] {
            let dir = base.join(format!("{signal}-{delay_ms}"));
            std::fs::create_dir_all(&dir).unwrap();
            let what = format!("signal {signal} after {delay_ms} ms");
            let mut child = bin()
                .args(args)
                .current_dir(&dir)
                .env("CE_COMMIT_PAUSE_MS", "150")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() {
                assert!(started.elapsed() < Duration::from_secs(20), "{what}: the run hangs");
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let whole = assert_outputs_whole(&dir, &what);
            match out.status.code() {
                Some(0) => finished += 1,
                Some(code) => {
                    assert_eq!(code, status, "{what}: {stderr}");
                    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
                    assert!(stderr.contains("stopped by"), "{what}: {stderr}");
                    stopped += 1;
                    if whole > 0 {
                        during_writes += 1;
                    }
                }
                None => {
                    // Before `main` runs (the loader and libtorch's static
                    // set-up: 0.2 s here, longer on a loaded or cold
                    // machine), nothing of ours can catch it: the signal's
                    // default action ends the process (a shell shows 130 or
                    // 143 all the same), before any output was begun. That
                    // the handler works is what `stopped` counts.
                    use std::os::unix::process::ExitStatusExt;
                    assert_eq!(out.status.signal(), Some(signal), "{what}");
                    assert_eq!(whole, 0, "{what}: killed by the signal after writing");
                    early += 1;
                }
            }
        }
    }
    // The delays cover start-up, training and the writes.
    assert!(stopped >= 8, "only {stopped} runs were stopped");
    assert!(during_writes >= 2, "only {during_writes} stops fell among the writes");
    assert!(finished >= 1 || during_writes >= 4, "no run got to its end: {finished}");
    eprintln!("{stopped} stopped ({during_writes} among the writes), {finished} finished, {early} before main");
}

/// SIGKILL, which no handler sees, inside a write leaves the temporary file;
/// the next run writing the same path removes it, but not one whose process
/// is still alive (another run writing there).
#[test]
fn the_next_run_removes_what_a_sigkill_left() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sigkill");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let args = ["train", "--dataset", "iris", "--epochs", "2", "--quiet", "--device", "cpu"];
    let args = [&args[..], &["--save", "s.safetensors"]].concat();
    let mut child = bin()
        .args(&args)
        .current_dir(&dir)
        .env("CE_COMMIT_PAUSE_MS", "5000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let orphan = dir.join(format!(".s.safetensors.tmp-{}", child.id()));
    let started = Instant::now();
    // The temporary file written whole, waiting for its rename.
    while std::fs::metadata(&orphan).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "no temporary file was written");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(orphan.exists(), "SIGKILL should leave the temporary file");
    assert!(!dir.join("s.safetensors").exists());
    let live = dir.join(format!(".s.safetensors.tmp-{}", std::process::id()));
    std::fs::write(&live, b"another run's").unwrap();

    let out = bin().args(&args).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Checkpoint::read(&dir.join("s.safetensors")).unwrap();
    assert!(!orphan.exists(), "the killed run's temporary file is left");
    assert!(live.exists(), "a live process's temporary file was removed");
}
