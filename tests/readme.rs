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
//!   `us/step`, every number is masked;
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

use common::{root, skip};
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

/// Whether a command line is the test command itself.
fn is_test_command(line: &str) -> bool {
    line.split('#').next().unwrap_or("").trim() == "scripts/test.sh"
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
        let mut last_stdout: Option<(String, String)> = None; // (where, stdout)
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
                    last_stdout = Some((at, stdout));
                }
                "text" => {
                    let Some((from, stdout)) = last_stdout.take() else {
                        failures.push(format!(
                            "{at}: a `text` block (output) with no `sh` block before it to check it against"
                        ));
                        continue;
                    };
                    outputs_checked += 1;
                    let (shown, real) = (mask_timings(&block.body), mask_timings(&stdout));
                    if shown != real {
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
        skip(reason);
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
fn masking_keeps_everything_but_timings() {
    assert_eq!(
        mask_timings("speed:     1145583 samples/s (0.02 s for 200 epochs)\nloss 0.1312"),
        "speed:     # samples/s (# s for # epochs)\nloss 0.1312"
    );
}
