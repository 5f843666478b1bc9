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
        let epochs = csv.lines().skip(1).count();
        assert!(epochs == 20 || epochs == 150, "{what}: --metrics-csv has {epochs} epochs");
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

/// Starts the binary in `dir`, its stderr kept for [`wait_end`].
fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], dir: &Path) -> std::process::Child {
    bin()
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// What `/proc/PID` says of a running process: whether SIGINT and SIGTERM
/// are blocked in its main thread, how many threads it has, and the CPU
/// time it has used (clock ticks). `None` once it is gone.
fn proc_state(pid: u32) -> Option<(bool, usize, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string())
    };
    let blocked = u64::from_str_radix(&field("SigBlk:")?, 16).ok()?;
    let wanted = (1u64 << (libc::SIGINT - 1)) | (1u64 << (libc::SIGTERM - 1));
    let threads = field("Threads:")?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    let cpu = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((blocked & wanted == wanted, threads, cpu))
}

/// A zombie or gone process: it has ended (what `try_wait` will collect).
fn wait_end(child: &mut std::process::Child, what: &str) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "{what}: the run hangs");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut stderr = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    std::process::Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: stderr.into(),
    }
}

/// The signals are blocked before libtorch's static initializers run (an
/// executable's `.preinit_array` runs before any shared library's
/// initializers), not only once `main` starts: registering libtorch's
/// operators is most of a short run's time (0.3 s of 0.5 s here), and a
/// signal in it used to end the process by its default action, with no
/// line. Measured in the process's own CPU time, which a loaded machine
/// does not stretch: the mask must be in place before half of the CPU time
/// that passes until `main` starts its signal thread (the second thread).
#[test]
fn the_signals_are_blocked_before_libtorch_initializes() {
    for attempt in 0..3 {
        let mut child = spawn(&["--steps", "1"], Path::new("."));
        let (mut blocked_at, mut main_at) = (None, None);
        while let Some((blocked, threads, cpu)) = proc_state(child.id()) {
            if blocked && blocked_at.is_none() {
                blocked_at = Some(cpu);
            }
            if threads >= 2 {
                main_at = Some(cpu);
                break;
            }
        }
        let out = wait_end(&mut child, "the example");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (Some(blocked_at), Some(main_at)) = (blocked_at, main_at) else {
            continue; // the process outran the polling: try again
        };
        eprintln!("blocked after {blocked_at} ticks of CPU time, main's thread after {main_at}");
        assert!(
            blocked_at * 2 < main_at.max(2),
            "SIGINT/SIGTERM were blocked only after {blocked_at} of the {main_at} clock ticks \
             before main (attempt {attempt})"
        );
        return;
    }
    panic!("three runs ended before their state could be read");
}

/// SIGINT or SIGTERM at any moment of a command, from the first moment its
/// mask is set (what precedes it is the loader mapping the libraries, no
/// code of the program's) through libtorch's set-up, argument parsing, data
/// loading, every epoch, evaluation, the writes and the exit: one line
/// `error: stopped by ...` and status 130 or 143, or, for a signal that
/// comes after the run's end, status 0. The moments are spread over each
/// command's measured length, for `train` (with every output), `eval`,
/// `bench` and the example. And signals sent from the very start, before
/// the mask may be set: a run that a signal ends by its default action must
/// have had its mask unset when it was sent (checked just before sending).
#[test]
fn a_signal_at_any_moment_ends_with_one_line_and_its_status() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("signal-moments");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.safetensors");
    let status = bin()
        .args(["train", "--dataset", "digits", "--epochs", "3", "--quiet", "--device", "cpu"])
        .arg("--save")
        .arg(&model)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let model = model.to_str().unwrap();
    let train = [
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "150",
        "--quiet",
        "--device",
        "cpu",
        "--save",
        "s.safetensors",
        "--plot",
        "p.svg",
        "--metrics-csv",
        "m.csv",
        "--checkpoint",
        "c.safetensors",
        "--checkpoint-every",
        "10",
    ];
    let commands: [(&str, Vec<&str>); 4] = [
        ("train", train.to_vec()),
        ("eval", vec!["eval", "--dataset", "digits", "--load", model, "--device", "cpu"]),
        ("bench", vec!["bench", "--steps", "4000", "--device", "cpu"]),
        ("the example", vec!["--steps", "3000", "--device", "cpu"]),
    ];
    let (mut stopped, mut finished, mut before_mask) = (0, 0, 0);
    for (name, args) in &commands {
        // The command's length, unsignalled.
        let started = Instant::now();
        let out = bin().args(args).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let length = started.elapsed().as_secs_f64();
        // From the moment the mask is set: 0 to 110% of the run's length.
        let fractions =
            [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.1];
        for (i, fraction) in fractions.iter().enumerate() {
            let (signal, code) =
                if i % 2 == 0 { (libc::SIGINT, 130) } else { (libc::SIGTERM, 143) };
            let what =
                format!("{name}: signal {signal} at {:.0}% of {length:.2} s", fraction * 100.0);
            for f in ["s.safetensors", "p.svg", "m.csv", "c.safetensors"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let mut child = spawn(args, &dir);
            while !proc_state(child.id()).is_some_and(|(blocked, _, _)| blocked) {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "{what}: ended before its mask was seen"
                );
            }
            std::thread::sleep(Duration::from_secs_f64(length * fraction));
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let out = wait_end(&mut child, &what);
            let stderr = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => finished += 1,
                got => {
                    assert_eq!(got, Some(code), "{what}: {stderr}");
                    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
                    assert!(stderr.starts_with("error: stopped by"), "{what}: {stderr}");
                    stopped += 1;
                }
            }
            assert_outputs_whole(&dir, &what);
        }
        // And from the spawn on, without waiting for the mask.
        for delay_ms in [0u64, 2, 5, 10, 20, 40] {
            let what = format!("{name}: SIGTERM {delay_ms} ms after the spawn");
            let mut child = spawn(args, &dir);
            std::thread::sleep(Duration::from_millis(delay_ms));
            let masked = proc_state(child.id()).is_some_and(|(blocked, _, _)| blocked);
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let out = wait_end(&mut child, &what);
            let stderr = String::from_utf8_lossy(&out.stderr);
            use std::os::unix::process::ExitStatusExt;
            if out.status.signal().is_some() {
                assert!(!masked, "{what}: the mask was set, yet the signal killed it");
                before_mask += 1;
            } else {
                assert_eq!(out.status.code(), Some(143), "{what}: {stderr}");
                assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            }
        }
    }
    eprintln!("{stopped} stopped, {finished} finished, {before_mask} signalled before the mask");
    assert!(stopped >= 40, "only {stopped} of 60 runs were stopped");
}
