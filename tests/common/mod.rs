//! Helpers shared by the integration tests: the f64 oracle, a tiny PRNG that
//! does not touch libtorch's generator, the binary, and the PyTorch reference.
#![allow(dead_code)] // each test file uses its own subset

pub mod ce_oracle;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::Mutex;

/// libtorch's random generator is global: tests that seed and draw from it
/// in this process take this lock first.
pub static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Locks [`TORCH_RNG`], ignoring poisoning by a failed test.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- oracle --

/// `-log softmax(logits)[target]` in f64, by log-sum-exp around the max:
/// `log(sum_j exp(x_j - m)) - (x_t - m)`, finite for any finite logits.
pub fn nll_of_row(logits: &[f64], target: usize) -> f64 {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|x| (x - m).exp()).sum();
    sum.ln() - (logits[target] - m)
}

/// `softmax(logits)` in f64.
pub fn softmax_row(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// `nn.CrossEntropyLoss()` (mean reduction) for `(N, C)` logits, in f64.
pub fn cross_entropy_mean(logits: &[Vec<f64>], targets: &[usize]) -> f64 {
    let n = logits.len() as f64;
    logits.iter().zip(targets).map(|(row, &t)| nll_of_row(row, t)).sum::<f64>() / n
}

/// dLoss/dlogits of the mean cross-entropy: `(softmax - onehot) / N`.
pub fn cross_entropy_grad(logits: &[Vec<f64>], targets: &[usize]) -> Vec<Vec<f64>> {
    let n = logits.len() as f64;
    logits
        .iter()
        .zip(targets)
        .map(|(row, &t)| {
            let mut g = softmax_row(row);
            g[t] -= 1.0;
            g.iter().map(|v| v / n).collect()
        })
        .collect()
}

/// `log(1 + exp(z))`, stably.
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Asserts `|actual - expected| <= rel * max(|expected|, floor)`.
#[track_caller]
pub fn assert_close(actual: f64, expected: f64, rel: f64, floor: f64, what: &str) {
    let tol = rel * expected.abs().max(floor);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: got {actual:e}, expected {expected:e} (|diff| {:e} > tol {tol:e})",
        (actual - expected).abs()
    );
}

// ------------------------------------------------------------------ PRNG --

/// SplitMix64: test data that owes nothing to libtorch.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi), rounded to f32 (the values libtorch will see).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (lo + (hi - lo) * u) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn matrix(&mut self, rows: usize, cols: usize, lo: f64, hi: f64) -> Vec<Vec<f32>> {
        (0..rows).map(|_| (0..cols).map(|_| self.uniform(lo, hi)).collect()).collect()
    }
}

/// Rows of f32 as an `[rows, columns]` tensor (`[0, 0]` for no rows).
pub fn matrix_tensor(rows: &[Vec<f32>]) -> tch::Tensor {
    let c = rows.first().map_or(0, |r| r.len()) as i64;
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    tch::Tensor::from_slice(&flat).view([rows.len() as i64, c])
}

pub fn to_f64(m: &[Vec<f32>]) -> Vec<Vec<f64>> {
    m.iter().map(|r| r.iter().map(|&v| v as f64).collect()).collect()
}

// ------------------------------------------------------- binary & python --

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The crate's binary, built by cargo for this test run; or `CE_BIN`,
/// where a test binary runs away from its build tree (scripts/gpu-check.sh
/// carries both to the device machine, whose libtorch is found through
/// `LD_LIBRARY_PATH`: its rpath points at this machine's).
pub fn bin() -> Command {
    match std::env::var_os("CE_BIN") {
        Some(path) => Command::new(path),
        None => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_cross-entropy-tch"));
            // The binary must find libtorch through its rpath alone.
            cmd.env_remove("LD_LIBRARY_PATH");
            cmd
        }
    }
}

pub fn run_bin(args: &[&str]) -> Output {
    bin().args(args).output().expect("running the cross-entropy-tch binary")
}

/// Says why a test did not run, past libtest's output capture (which takes
/// only `print!`/`eprint!`), so the line shows in every test log; and
/// records it in `$CE_SKIP_LOG` (set by `scripts/test.sh`), one line per
/// skip, `TEST<TAB>REASON`, so that the closing line counts the test as
/// skipped, not passed. Call it once, then return from the test.
pub fn skip(reason: &str) {
    skip_part(reason);
    if let Some(log) = std::env::var_os("CE_SKIP_LOG") {
        let binary = std::env::current_exe().ok();
        let binary = binary
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().split('-').next().unwrap_or("").to_string())
            .unwrap_or_default();
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("?");
        let line = format!("{binary}::{test}\t{reason}\n");
        use std::io::Write;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log);
        let _ = file.and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// Says that a part of a test did not run (one row of a table, one command
/// of the walk): printed like [`skip`], but the test itself ran.
pub fn skip_part(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

pub fn is_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The Python that has PyTorch 2.13.0: `$CE_PYTHON`, else the venv made by
/// scripts/setup.sh. `None` (with the reason printed) when there is none;
/// under CI that is a failure, not a skip.
pub fn reference_python() -> Option<PathBuf> {
    let python = std::env::var_os("CE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    // The installed version from the package metadata: importing torch
    // would cost 2 s of CPU in every test that asks (the runs then import it).
    let check = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('torch'))"])
        .output();
    let reason = match check {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // The PyTorch of the libtorch this build links (the venv of
            // CE_LIBTORCH's release, see scripts/setup.sh).
            let wanted = cross_entropy_tch::LIBTORCH_VERSION;
            if version.split('+').next() == Some(wanted) {
                return Some(python);
            }
            format!("{} has torch {version}, not {wanted}", python.display())
        }
        Ok(out) => format!(
            "{} has no torch: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ),
        Err(e) => format!("{} cannot run: {e}", python.display()),
    };
    if is_ci() {
        panic!("CI is set and the PyTorch reference is missing: {reason} (run scripts/setup.sh)");
    }
    skip(&format!("PyTorch reference not available: {reason} (run scripts/setup.sh)"));
    None
}

/// Runs `scripts/reference.py ARGS` with the reference Python.
pub fn run_reference(python: &PathBuf, args: &[&str]) -> Output {
    let out = Command::new(python)
        .arg(root().join("scripts/reference.py"))
        .args(args)
        .output()
        .expect("running scripts/reference.py");
    assert!(
        out.status.success(),
        "reference.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `scripts/reference.py`'s `main(argv)` once per case, all in one
/// Python process, so that torch is imported once, not once a case (2 s
/// each): each case runs in its own directory with its own captured stdout
/// and stderr, and its status is what `sys.exit` gives (what the
/// interpreter would exit with).
const DRIVER: &str = r#"
import contextlib, importlib.util, io, json, os, sys
spec = importlib.util.spec_from_file_location("reference", sys.argv[1])
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)
for line in sys.stdin:
    case = json.loads(line)
    os.chdir(case["dir"])
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            reference.main(case["args"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}), flush=True)
"#;

/// [`DRIVER`] on `(directory, arguments)` cases; one `Output` per case.
pub fn run_reference_batch(python: &Path, cases: &[(PathBuf, Vec<&str>)]) -> Vec<Output> {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(python)
        .args(["-c", DRIVER])
        .arg(root().join("scripts/reference.py"))
        .env_remove("REFERENCE_TRACEBACK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running scripts/reference.py");
    let mut stdin = child.stdin.take().expect("a stdin pipe");
    for (dir, args) in cases {
        let line = serde_json::json!({"dir": dir, "args": args});
        writeln!(stdin, "{line}").expect("writing a case to the driver");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("waiting for the driver");
    assert!(out.status.success(), "the driver failed: {}", String::from_utf8_lossy(&out.stderr));
    let outputs: Vec<Output> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let text = |key: &str| v[key].as_str().unwrap_or_default().as_bytes().to_vec();
            let code = v["code"].as_i64().unwrap_or(1) as i32;
            Output {
                status: ExitStatus::from_raw(code << 8),
                stdout: text("stdout"),
                stderr: text("stderr"),
            }
        })
        .collect();
    assert_eq!(outputs.len(), cases.len(), "one result per case from the driver");
    outputs
}
