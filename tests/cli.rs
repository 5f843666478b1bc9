//! The binary as a user runs it.

mod common;

use common::*;
use serde_json::Value;

fn stdout_of(args: &[&str]) -> String {
    let out = run_bin(args);
    assert!(
        out.status.success(),
        "{args:?} exited with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

#[test]
fn no_arg_run_prints_the_loss_and_what_changed() {
    let out = run_bin(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: Value = serde_json::from_str(&stdout_of(&["--json"])).unwrap();
    let loss: f32 = json["losses"][0].to_string().parse().unwrap();
    // The same loss in PyTorch's print format and in full.
    assert!(
        stdout.contains(&format!("print(loss) -> tensor({loss:.4}, grad_fn=<NllLossBackward0>)"))
    );
    assert!(stdout.contains(&format!("f32 {loss})")), "{stdout}");
    for what in [
        "MyModel(linear=Linear(in_features=10, out_features=3, bias=True))",
        "torch.manual_seed(0)",
        "torch.randn(10, 10)",
        "torch.randint(0, 3, (10,))",
        "one SGD step with lr = 0.01",
        "torch.optim.SGD(model.parameters(), lr=0.01)",
        "weight moved by at most",
    ] {
        assert!(stdout.contains(what), "no '{what}' in:\n{stdout}");
    }
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn json_is_one_document_with_every_key() {
    let stdout = stdout_of(&["--json", "--steps", "3", "--batch-size", "4", "--classes", "5"]);
    assert_eq!(stdout.trim_end().lines().count(), 1, "one line of JSON and nothing else");
    let doc: Value = serde_json::from_str(&stdout).expect("valid JSON");
    for key in [
        "torch_version",
        "device",
        "config",
        "initial",
        "inputs",
        "targets",
        "outputs",
        "losses",
        "grad",
        "final",
    ] {
        assert!(doc.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(doc["torch_version"], cross_entropy_tch::LIBTORCH_VERSION);
    assert!(doc["torch_version"].as_str().unwrap().starts_with("2.1"), "{}", doc["torch_version"]);
    for key in ["seed", "batch_size", "features", "classes", "lr", "steps"] {
        assert!(doc["config"].get(key).is_some(), "missing config.{key}");
    }
    let shape = |v: &Value| -> Vec<usize> {
        let rows = v.as_array().unwrap();
        match rows[0].as_array() {
            Some(cols) => vec![rows.len(), cols.len()],
            None => vec![rows.len()],
        }
    };
    assert_eq!(shape(&doc["inputs"]), [4, 10]);
    assert_eq!(shape(&doc["targets"]), [4]);
    assert_eq!(shape(&doc["outputs"]), [4, 5]);
    assert_eq!(shape(&doc["losses"]), [3]);
    for part in ["initial", "grad", "final"] {
        assert_eq!(shape(&doc[part]["weight"]), [5, 10], "{part}.weight");
        assert_eq!(shape(&doc[part]["bias"]), [5], "{part}.bias");
    }
    assert!(doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| (0..5).contains(&t.as_i64().unwrap())));
}

#[test]
fn json_numbers_round_trip_as_f32() {
    let doc: Value = serde_json::from_str(&stdout_of(&["--json", "--device", "cpu"])).unwrap();
    for row in doc["inputs"].as_array().unwrap() {
        for v in row.as_array().unwrap() {
            let text = v.to_string();
            let x: f32 = text.parse().unwrap();
            assert_eq!(x.to_string(), text, "shortest f32 text");
        }
    }
}

#[test]
fn help_explains_every_flag_in_pytorch_terms() {
    let help = stdout_of(&["--help"]);
    for flag in [
        "--seed",
        "--device",
        "--batch-size",
        "--features",
        "--classes",
        "--lr",
        "--steps",
        "--threads",
        "--json",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    for words in [
        "torch.manual_seed",
        "torch.randn(10, 10)",
        "torch.randint(0, 3, (10,))",
        "torch.optim.SGD",
        "MyModel(input_size, output_size)",
        "torch.set_num_threads",
    ] {
        assert!(help.contains(words), "--help lacks '{words}'");
    }
}

#[test]
fn long_runs_show_bounded_progress() {
    let stdout = stdout_of(&["--steps", "500", "--lr", "0.5", "--device", "cpu"]);
    let steps = stdout.lines().filter(|l| l.starts_with("step")).count();
    assert!((20..=22).contains(&steps), "{steps} step lines:\n{stdout}");
    assert!(stdout.contains("step 500/500"));
    assert!(stdout.contains("500 SGD steps"));
}

#[test]
fn bad_flags_get_one_line_and_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--lr", "nan"], "--lr"),
        (&["--lr", "inf"], "--lr"),
        (&["--lr", "-0.1"], "--lr"),
        (&["--classes", "1"], "--classes"),
        (&["--batch-size", "0"], "--batch-size"),
        (&["--features", "-3"], "--features"),
        (&["--steps", "0"], "--steps"),
        (&["--threads", "0"], "--threads"),
        (&["--device", "tpu"], "expected cpu, cuda, cuda:N or auto"),
        (&["--device", "cuda:x"], "expected cpu, cuda, cuda:N or auto"),
        (&["--batch-size", "100000", "--features", "100000"], "over 1073741824 elements"),
        (&["--frobnicate"], "--frobnicate"),
    ];
    for (args, expected) in cases {
        let out = run_bin(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: stderr lacks '{expected}': {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line on stderr: {stderr}");
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("terminate called"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout not empty");
    }
}

#[test]
fn cuda_without_a_gpu_is_one_clear_line() {
    if tch::Cuda::is_available() {
        skip("this machine has a GPU, so --device cuda is not an error here");
        return;
    }
    for device in ["cuda", "cuda:0", "cuda:7"] {
        let out = run_bin(&["--device", device]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{device}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{device}: {stderr}");
        assert!(stderr.contains("no CUDA device"), "{device}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // auto falls back to the CPU.
    let doc: Value = serde_json::from_str(&stdout_of(&["--json", "--device", "auto"])).unwrap();
    assert_eq!(doc["device"], "cpu");
}

#[test]
fn version_names_the_crate_and_its_libtorch() {
    let stdout = stdout_of(&["--version"]);
    assert_eq!(
        stdout.trim_end(),
        format!(
            "cross-entropy-tch {} (built for libtorch {})",
            env!("CARGO_PKG_VERSION"),
            cross_entropy_tch::LIBTORCH_VERSION
        )
    );
    assert!(cross_entropy_tch::LIBTORCH_VERSION.starts_with("2."), "a real version");
}

/// `| head`: the reader closes the pipe after a few lines; we end quietly
/// with status 0, as cat and ripgrep do.
#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::process::Stdio;
    for args in [
        &["train", "--dataset", "iris", "--quiet", "--device", "cpu", "--epochs", "5"][..],
        &["--steps", "50", "--device", "cpu"][..],
        &["--device", "cpu", "--json"][..],
        &["train", "--dataset", "iris", "--quiet", "--device", "cpu", "--json"][..],
        &["--help"][..],
    ] {
        let mut child = bin()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the binary");
        drop(child.stdout.take()); // the reader is gone before the first line
        let out = child.wait_with_output().expect("waiting for the binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: stderr not empty: {stderr}");
    }
}

#[test]
fn a_broken_torch_save_file_is_one_line() {
    let dir = std::env::temp_dir().join(format!("ce-cli-pt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The first bytes of a torch.save zip archive, and of a legacy pickle:
    // read as .pt files (tests/train.rs loads whole ones), refused here.
    for (name, bytes) in
        [("zip.pt", &b"PK\x03\x04archive/data.pkl"[..]), ("pickle.pt", &b"\x80\x02}q\x00"[..])]
    {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = run_bin(&[
            "eval",
            "--dataset",
            "iris",
            "--device",
            "cpu",
            "--load",
            path.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr
                .contains(&format!("--load {}: not a readable torch.save file (", path.display())),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A usage error keeps its causes: the flag, the file, and the reason.
#[test]
fn usage_errors_keep_the_cause_chain() {
    let out = run_bin(&["train", "--data", "/nonexistent/x.csv", "--device", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: --data /nonexistent/x.csv: cannot open: No such file or directory (os error 2)"
    );
}
