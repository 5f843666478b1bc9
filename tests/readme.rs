//! The README walk: every command in the shell blocks of `README.md` and of
//! the guides under `docs/` runs verbatim, from the repository root, in the
//! environment of a user's shell (none of `scripts/env.sh`'s variables), and
//! whatever the pages show as a command's output must be what it prints.
//!
//! The rules the pages follow:
//! - a fenced block tagged `sh` is commands; the walk runs the whole block
//!   as one bash script (`set -euo pipefail`), so `source` and `cd` carry
//!   from line to line, and it must exit 0;
//! - a block tagged `text` shows the stdout of the `sh` block before it, and
//!   must equal it, except for timings: in lines that hold `samples/s` or
//!   `us/step`, every number is masked; and except for the last digits of
//!   a decimal number (see [`numbers_match`]: the pages were printed on one
//!   CPU, and libtorch's kernels round by the CPU they run on; a block whose
//!   commands train in bf16 or fp16, `--amp`, gets [`LOW_PRECISION`]'s
//!   wider margin);
//! - `/path/to/libtorch` stands for a libtorch: the walk puts in the one
//!   this crate was built against (the venv's);
//! - a block that sets `LIBTORCH=` builds in `target/readme-libtorch`, so
//!   that its other torch-sys configuration does not rebuild `target/`
//!   (started as a copy of `target/release`'s dependencies);
//! - a line that ends in `# needs a GPU` is skipped, saying so, where
//!   libtorch sees none; every other block runs with `CUDA_VISIBLE_DEVICES=`
//!   empty, since the outputs shown are the CPU's;
//! - `scripts/test.sh` is not run: it is the command running this walk
//!   (`.ci/run` runs it, which is checked).
//!
//! Files the commands write in the root (rust.json, iris.svg, ...) are
//! removed afterwards; files that were there before are left alone.

mod common;

/// Starts `dir` (the `LIBTORCH=` block's target dir) from
/// `target/release`'s compiled dependencies, the first time
/// (`scripts/seed-target.sh`, which `scripts/env.sh` uses for the same).
fn seed_target_dir(dir: &Path) {
    let status = Command::new("bash")
        .arg(root().join("scripts/seed-target.sh"))
        .arg(dir)
        .status()
        .expect("running bash");
    assert!(status.success(), "scripts/seed-target.sh {}", dir.display());
}

use common::{root, skip_part};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fenced block of a page.
#[derive(Debug)]
struct Block {
    page: String,
    /// The line of the opening fence, counting from 1.
    line: usize,
    lang: String,
    body: String,
}

fn blocks(page: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    page: page.to_string(),
                    line: i + 1,
                    lang: info.trim().to_string(),
                    body: String::new(),
                })
            }
            (Some(_), Some(_)) => out.push(open.take().expect("an open block")),
            (Some(block), None) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{page}: a fenced block is never closed");
    out
}

/// The pages walked: the README and every guide under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .map(|dir| dir.map(|e| e.expect("a docs/ entry").path()).collect())
        .unwrap_or_default();
    docs.retain(|p| p.extension().is_some_and(|e| e == "md"));
    docs.sort();
    pages.extend(docs);
    pages
}

/// Masks what differs from run to run: every number in a line that reports
/// a speed.
fn mask_timings(text: &str) -> String {
    text.lines()
        .map(|line| {
            if !(line.contains("samples/s") || line.contains("us/step")) {
                return line.trim_end().to_string();
            }
            let mut out = String::new();
            let mut in_number = false;
            for c in line.trim_end().chars() {
                let digit = c.is_ascii_digit() || (in_number && c == '.');
                if digit && !in_number {
                    out.push('#');
                } else if !digit {
                    out.push(c);
                }
                in_number = digit;
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A page's text cut into runs of digits (with their decimal point and
/// exponent) and the text between them.
fn tokens(text: &str) -> Vec<(bool, &str)> {
    let bytes = text.as_bytes();
    let (mut out, mut i, mut start) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        if start < i {
            out.push((false, &text[start..i]));
        }
        let begin = i;
        let digits = |mut j: usize| {
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            j
        };
        i = digits(i);
        if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
            i = digits(i + 1);
        }
        if i + 1 < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            let sign = usize::from(matches!(bytes[i + 1], b'-' | b'+'));
            if bytes.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
                i = digits(i + 1 + sign);
            }
        }
        out.push((true, &text[begin..i]));
        start = i;
    }
    if start < bytes.len() {
        out.push((false, &text[start..]));
    }
    out
}

/// How far a decimal printed here may be from the one the page shows,
/// relative to its value (see [`numbers_match`]): about 16 f32 ulps.
const F32: f64 = 1e-6;

/// The same for a block whose commands train in bf16 or fp16 (`--amp`):
/// bf16 keeps 8 bits of mantissa, so where another CPU's f32 kernel rounds
/// one product differently, a bf16 rounding moves by 2^-8 instead of one
/// f32 ulp, and 20 epochs carry it on. Seen: the page's `--amp` block, as
/// an earlier session's machine printed it, against an AMD EPYC with only
/// AVX2 (session 14): train_loss 0.03184762 against 0.03185505, test_loss
/// 0.10400828 against 0.10398509, fp16 0.032216832 against 0.032208864,
/// 2.2e-4 to 2.5e-4 of their values; Rust and PyTorch equal bit for bit on
/// both machines (`tests/amp.rs`, `tests/train.rs`).
const LOW_PRECISION: f64 = 1e-3;

/// The margin for a block's output: [`LOW_PRECISION`] where its commands
/// train with `--amp`, else [`F32`].
fn margin_for(commands: &[String]) -> f64 {
    if commands.iter().any(|c| c.split_whitespace().any(|w| w == "--amp")) {
        LOW_PRECISION
    } else {
        F32
    }
}

/// Whether a number printed here matches the one the page shows. Integers
/// (counts, classes, epochs) must be equal. A decimal may differ by one unit
/// of its last shown digit (a value printed to 6 places that lands on the
/// other side of a rounding boundary) or by `relative` of its value. The
/// reason for the tolerance: MKL's sgemm and ATen's vector kernels pick
/// their code by CPU vendor and instruction set, so the same seed on
/// another CPU rounds differently in the last bits: the pages were printed
/// on an earlier session's machine, and an AMD EPYC with AVX512 prints 1 to
/// 3 f32 ulps away after 20 to 50 epochs (0.34606659412384033 for the
/// page's 0.3460666239261627; `MKL_CBWR=COMPATIBLE` or
/// `ATEN_CPU_CAPABILITY=default` there bring back some of the page's
/// lines). That Rust and PyTorch agree bit for bit on the machine at hand
/// is what `tests/parity.rs` and `tests/train.rs` prove.
fn numbers_match(shown: &str, printed: &str, relative: f64) -> bool {
    if shown == printed {
        return true;
    }
    let is_integer = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if is_integer(shown) || is_integer(printed) {
        return false;
    }
    let (Ok(a), Ok(b)) = (shown.parse::<f64>(), printed.parse::<f64>()) else { return false };
    let lower = shown.to_ascii_lowercase();
    let (mantissa, exponent) = lower.split_once('e').unwrap_or((&lower, "0"));
    let places = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    let unit = 10f64.powi(exponent.parse::<i32>().unwrap_or(0) - places);
    (a - b).abs() <= unit.max(relative * a.abs()) * (1.0 + 1e-9)
}

/// Whether the printed output is what the page shows: the same text, and
/// the same numbers as [`numbers_match`] compares them.
fn same_output(shown: &str, printed: &str, relative: f64) -> bool {
    let (shown, printed) = (tokens(shown), tokens(printed));
    shown.len() == printed.len()
        && shown.iter().zip(&printed).all(|(&(num_a, a), &(num_b, b))| {
            num_a == num_b && if num_a { numbers_match(a, b, relative) } else { a == b }
        })
}

/// Whether a command line is the test command itself.
fn is_test_command(line: &str) -> bool {
    let command = line.split('#').next().unwrap_or("").trim();
    command == "scripts/test.sh" || command.starts_with("scripts/test.sh ")
}

fn has_gpu() -> bool {
    tch::Cuda::is_available()
}

/// The block as bash will run it, and the commands it holds (for the count
/// and the log), with skips said.
fn prepare(block: &Block, libtorch: &str, skipped: &mut Vec<String>) -> (String, Vec<String>) {
    let mut script = String::from("set -euo pipefail\n");
    let mut commands = Vec::new();
    for line in block.body.lines() {
        let command = line.split(" #").next().unwrap_or("").trim();
        if command.is_empty() || command.starts_with('#') {
            script.push_str(line);
            script.push('\n');
            continue;
        }
        let at = format!("{}:{}", block.page, block.line);
        if is_test_command(line) {
            skipped.push(format!("{at}: `{command}` is the command running this walk"));
            continue;
        }
        if line.trim_end().ends_with("# needs a GPU") && !has_gpu() {
            skipped.push(format!("{at}: `{command}` needs a GPU and libtorch sees none"));
            continue;
        }
        let line = line.replace("/path/to/libtorch", libtorch);
        commands.push(line.split(" #").next().unwrap_or("").trim().to_string());
        script.push_str(&line);
        script.push('\n');
    }
    (script, commands)
}

/// A user's shell: without the variables `scripts/env.sh` exported for the
/// test run, without cargo's variables for tests, and without the venv on
/// the PATH.
fn user_shell(script: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["1800", "bash", "-c", script]).current_dir(root());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || ["CARGO", "LIBTORCH", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV", "LD_LIBRARY_PATH"]
                .contains(&key.as_ref())
            || key.starts_with("RUST_TEST")
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let venv_bin = root().join(".venv/bin");
    if let Some(path) = std::env::var_os("PATH") {
        let kept: Vec<PathBuf> = std::env::split_paths(&path).filter(|p| p != &venv_bin).collect();
        cmd.env("PATH", std::env::join_paths(kept).expect("a valid PATH"));
    }
    cmd
}

fn top_level_files() -> BTreeSet<PathBuf> {
    std::fs::read_dir(root())
        .expect("the root can be listed")
        .map(|e| e.expect("a root entry").path())
        .collect()
}

#[test]
fn every_readme_command_runs_and_prints_what_the_page_shows() {
    let libtorch = Path::new(env!("CE_LIBTORCH_LIB"))
        .parent()
        .expect("libtorch's lib dir has a parent")
        .to_str()
        .expect("a UTF-8 path")
        .to_string();
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.split('#').next().unwrap_or("").contains("scripts/test.sh")),
        ".ci/run does not run scripts/test.sh, the README's test command"
    );

    let before = top_level_files();
    let mut skipped = Vec::new();
    let (mut commands_run, mut outputs_checked, mut failures) = (0, 0, Vec::new());
    for page in pages() {
        let name = page.strip_prefix(root()).unwrap_or(&page).display().to_string();
        let text = std::fs::read_to_string(&page).expect("a page");
        let mut last_stdout: Option<(String, String, f64)> = None; // (where, stdout, margin)
        for block in blocks(&name, &text) {
            let at = format!("{}:{}", block.page, block.line);
            match block.lang.as_str() {
                "sh" => {
                    let (script, commands) = prepare(&block, &libtorch, &mut skipped);
                    if commands.is_empty() {
                        last_stdout = None;
                        continue;
                    }
                    let mut cmd = user_shell(&script);
                    if !script.contains("# needs a GPU") {
                        // The outputs shown are the CPU's (`on cpu`), which
                        // `--device auto` picks only where no GPU is seen.
                        cmd.env("CUDA_VISIBLE_DEVICES", "");
                    }
                    if script.contains("LIBTORCH=") {
                        let dir = root().join("target/readme-libtorch");
                        seed_target_dir(&dir);
                        cmd.env("CARGO_TARGET_DIR", dir);
                    }
                    let started = std::time::Instant::now();
                    let out = cmd.output().expect("running bash");
                    commands_run += commands.len();
                    eprintln!(
                        "README walk: {at}: {} ({:.1} s, status {:?})",
                        commands.join(" && "),
                        started.elapsed().as_secs_f64(),
                        out.status.code()
                    );
                    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                    if !out.status.success() {
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        failures.push(format!(
                            "{at}: `{}` exited with {:?}:\n{}",
                            commands.join("; "),
                            out.status.code(),
                            tail.join("\n")
                        ));
                    }
                    last_stdout = Some((at, stdout, margin_for(&commands)));
                }
                "text" => {
                    let Some((from, stdout, margin)) = last_stdout.take() else {
                        failures.push(format!(
                            "{at}: a `text` block (output) with no `sh` block before it to check it against"
                        ));
                        continue;
                    };
                    outputs_checked += 1;
                    let (shown, real) = (mask_timings(&block.body), mask_timings(&stdout));
                    if !same_output(&shown, &real, margin) {
                        failures.push(format!(
                            "{at}: the output shown is not what {from} printed.\n--- shown\n{shown}\n--- printed\n{real}"
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    for path in top_level_files().difference(&before) {
        if path.is_file() {
            std::fs::remove_file(path).expect("removing a file the walk wrote");
        }
    }
    for reason in &skipped {
        skip_part(reason);
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "README walk: {commands_run} commands run, {outputs_checked} outputs checked, {} skipped",
        skipped.len()
    );
    assert!(failures.is_empty(), "README walk failed:\n\n{}", failures.join("\n\n"));
    assert!(commands_run >= 5 && outputs_checked >= 3, "the walk found too little to check");
}

#[test]
fn numbers_may_differ_only_in_their_last_digits() {
    // Seen between two CPUs: one unit of the 6th place, f32 ulps.
    assert!(same_output("now 1.171014 (-0.007800)", "now 1.171014 (-0.007799)", F32));
    assert!(same_output("loss 0.3460666239261627 acc 1", "loss 0.34606659412384033 acc 1", F32));
    assert!(same_output("by at most 4.450e-3", "by at most 4.451e-3", F32));
    // Text, integers and anything past the tolerance must be equal.
    assert!(!same_output("targets: [1, 0, 1]", "targets: [1, 0, 2]", F32));
    assert!(!same_output("step 1/1", "step 1/2", F32));
    assert!(!same_output("now 1.171014", "now 1.171016", F32));
    assert!(!same_output("by at most 4.450e-3", "by at most 4.452e-3", F32));
    assert!(!same_output("loss 0.3460666239261627", "loss 0.3460676239261627", F32));
    assert!(!same_output("loss 0.5 on cpu", "loss 0.5 on cuda", F32));
    assert!(!same_output("accuracy 0.967", "accuracy 0.967 0.1", F32));
    // An `--amp` block: the two CPUs' bf16 runs, and what stays refused.
    let bf16 = (
        "'train_loss': 0.03184762, 'test_loss': 0.10400828",
        "'train_loss': 0.03185505, 'test_loss': 0.103985086",
    );
    assert!(!same_output(bf16.0, bf16.1, F32));
    assert!(same_output(bf16.0, bf16.1, LOW_PRECISION));
    assert!(!same_output("loss 0.03184", "loss 0.03190", LOW_PRECISION));
    assert!(!same_output("14 61035.15625", "15 61035.15625", LOW_PRECISION));
    let amp = |c: &str| margin_for(&[c.to_string()]);
    assert_eq!(amp("scripts/run.sh train --dataset digits --amp bf16 --quiet"), LOW_PRECISION);
    assert_eq!(amp("scripts/run.sh train --dataset digits --quiet"), F32);
}

#[test]
fn masking_keeps_everything_but_timings() {
    assert_eq!(
        mask_timings("speed:     1145583 samples/s (0.02 s for 200 epochs)\nloss 0.1312"),
        "speed:     # samples/s (# s for # epochs)\nloss 0.1312"
    );
}
