//! Parity with real PyTorch: the binary's `--json` against
//! `scripts/reference.py --json`, run with the venv's Python, compared as f32
//! bit patterns. No tolerance: on the CPU both run the very same libtorch
//! kernels in the same order from the same random stream.
//!
//! Without PyTorch these tests skip with a printed reason, except under CI,
//! where they fail.

mod common;

use common::*;
use serde_json::Value;

/// Every number of a JSON tree, flattened, with its path; f32 parsed straight
/// from the number's text (the dev-dependency keeps it: `arbitrary_precision`).
fn leaves(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                leaves(item, format!("{path}.{k}"), out);
            }
        }
        other => out.push((path, other.to_string())),
    }
}

const NUMERIC_KEYS: [&str; 8] =
    ["initial", "inputs", "targets", "outputs", "losses", "grad", "final", "config"];

fn assert_bit_equal(rust: &Value, torch: &Value, what: &str) {
    for key in ["torch_version", "device"] {
        assert_eq!(rust[key], torch[key], "{what}: {key}");
    }
    for key in NUMERIC_KEYS {
        let (mut r, mut t) = (Vec::new(), Vec::new());
        leaves(&rust[key], key.to_string(), &mut r);
        leaves(&torch[key], key.to_string(), &mut t);
        assert_eq!(r.len(), t.len(), "{what}: {key} has {} numbers, PyTorch {}", r.len(), t.len());
        assert!(!r.is_empty(), "{what}: {key} is missing");
        let mut mismatches = Vec::new();
        for ((path, a), (tpath, b)) in r.iter().zip(&t) {
            assert_eq!(path, tpath, "{what}: the documents differ in shape");
            // The config holds f64 (lr) and i64 (seed): compared as f64.
            let same = if key == "config" {
                matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
            } else {
                matches!((a.parse::<f32>(), b.parse::<f32>()), (Ok(x), Ok(y)) if x.to_bits() == y.to_bits())
            };
            if !same {
                mismatches.push(format!("{path}: rust {a}, pytorch {b}"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{what}: {} of {} numbers differ, first: {:?}",
            mismatches.len(),
            r.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }
}

/// Each case through the binary and through the reference (one Python
/// process for all of them: torch is imported once).
fn compare_all(python: &std::path::Path, cases: &[&[&str]]) {
    let full: Vec<Vec<&str>> = cases
        .iter()
        .map(|args| {
            let mut full = vec!["--json", "--device", "cpu"];
            full.extend_from_slice(args);
            full
        })
        .collect();
    let batch: Vec<(std::path::PathBuf, Vec<&str>)> =
        full.iter().map(|a| (std::env::temp_dir(), a.clone())).collect();
    let torch_runs = run_reference_batch(python, &batch);
    for (args, torch) in full.iter().zip(torch_runs) {
        let out = run_bin(args);
        assert!(out.status.success(), "binary {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let rust: Value = serde_json::from_slice(&out.stdout).expect("the binary's --json is JSON");
        assert!(
            torch.status.success(),
            "reference {args:?}: {}",
            String::from_utf8_lossy(&torch.stderr)
        );
        let torch: Value =
            serde_json::from_slice(&torch.stdout).expect("reference.py's --json is JSON");
        assert_bit_equal(&rust, &torch, &format!("{args:?}"));
    }
}

/// The comparison itself: one ulp anywhere, or one key less, is caught.
#[test]
fn the_comparison_catches_one_ulp() {
    let out = run_bin(&["--json", "--device", "cpu"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_bit_equal(&doc, &doc, "identical");
    let w: f32 = doc["final"]["weight"][2][7].to_string().parse().unwrap();
    let mut nudged = doc.clone();
    nudged["final"]["weight"][2][7] =
        serde_json::from_str(&f32::from_bits(w.to_bits() + 1).to_string()).unwrap();
    let mut missing = doc.clone();
    missing["grad"].as_object_mut().unwrap().remove("bias");
    for (bad, what) in [(nudged, "one ulp"), (missing, "a missing key")] {
        let caught = std::panic::catch_unwind(|| assert_bit_equal(&doc, &bad, what));
        assert!(caught.is_err(), "{what} went unnoticed");
    }
}

#[test]
fn seed_defaults_are_bit_equal() {
    let Some(python) = reference_python() else { return };
    compare_all(&python, &[&[]]);
}

#[test]
fn other_seeds_are_bit_equal() {
    let Some(python) = reference_python() else { return };
    let seeds = ["1", "42", "-5", "123456789", "9223372036854775807"];
    let cases: Vec<[&str; 2]> = seeds.iter().map(|s| ["--seed", *s]).collect();
    let cases: Vec<&[&str]> = cases.iter().map(|c| &c[..]).collect();
    compare_all(&python, &cases);
}

#[test]
fn other_shapes_are_bit_equal() {
    let Some(python) = reference_python() else { return };
    let shapes = [
        ["1", "10", "3"],  // batch 1
        ["10", "10", "2"], // C = 2
        ["1", "1", "2"],   // the smallest
        ["64", "32", "10"],
        ["7", "300", "5"],
        ["256", "784", "10"], // MNIST-like, blocked matmuls
    ];
    let cases: Vec<[&str; 8]> = shapes
        .iter()
        .map(|[n, d, c]| ["--seed", "3", "--batch-size", n, "--features", d, "--classes", c])
        .collect();
    let cases: Vec<&[&str]> = cases.iter().map(|c| &c[..]).collect();
    compare_all(&python, &cases);
}

#[test]
fn learning_rates_and_multi_step_runs_are_bit_equal() {
    let Some(python) = reference_python() else { return };
    compare_all(
        &python,
        &[
            &["--lr", "0.5", "--steps", "5"],
            &["--lr", "0", "--steps", "2"],
            &["--lr", "0.1", "--steps", "50", "--seed", "11", "--classes", "4"],
            &["--lr", "1e-3", "--steps", "3", "--threads", "1", "--batch-size", "100"],
        ],
    );
}

/// `scripts/run.sh` with no arguments prints what PyTorch's `print(loss)`
/// prints for the example with `torch.manual_seed(0)`.
#[test]
fn no_arg_run_prints_pytorchs_loss() {
    let Some(python) = reference_python() else { return };
    let torch = run_reference(&python, &["--device", "cpu"]);
    let printed = String::from_utf8(torch.stdout).unwrap();
    let line = printed.lines().next().unwrap().trim().to_string();
    assert!(line.starts_with("tensor(") && line.contains("grad_fn=<NllLossBackward0>"), "{line}");
    let ours = run_bin(&["--device", "cpu"]);
    assert!(ours.status.success());
    let stdout = String::from_utf8(ours.stdout).unwrap();
    assert!(stdout.contains(&line), "PyTorch printed {line}, we printed:\n{stdout}");
}
