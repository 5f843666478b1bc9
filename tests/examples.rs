//! examples/train_loop.rs against examples/train_loop.py, the PyTorch
//! script it ports line by line: the same printed numbers, character for
//! character, for a whole run and for a run stopped after 10 epochs and
//! resumed from its checkpoint. The example runs through `cargo run`, as a
//! reader would run it.

mod common;
use common::*;
use std::process::Command;

fn rust(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["run", "--release", "--quiet", "--example", "train_loop", "--"])
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo run --example train_loop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn python(python: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg("examples/train_loop.py")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "train_loop.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_ported_script_prints_what_the_pytorch_script_prints() {
    let Some(py) = reference_python() else { return };
    let (r, p) = (rust(&[]), python(&py, &[]));
    assert_eq!(r.lines().count(), 20, "{r}");
    assert_eq!(r, p, "Rust (left) and PyTorch (right) differ");

    // Stopped after 10 epochs, then resumed from the checkpoint: the same
    // 20 lines on each side.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-test");
    std::fs::create_dir_all(&dir).unwrap();
    for (who, run) in [
        ("rust", &(|a: &[&str]| rust(a)) as &dyn Fn(&[&str]) -> String),
        ("pytorch", &|a: &[&str]| python(&py, a)),
    ] {
        let ck = dir.join(format!("{who}.checkpoint"));
        let _ = std::fs::remove_file(&ck);
        let ck = ck.to_str().unwrap();
        let first = run(&["--stop-after", "10", "--checkpoint", ck]);
        let rest = run(&["--checkpoint", ck]);
        assert_eq!(first.lines().count(), 10, "{who}: {first}");
        assert_eq!(format!("{first}{rest}"), p, "{who}: stopped and resumed");
    }
}
