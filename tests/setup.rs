//! scripts/setup.sh: idempotent, honours LIBTORCH, and fails with one clear
//! line when Python is missing or the venv holds another torch.

mod common;

use common::root;
use std::path::Path;
use std::process::{Command, Output};

fn setup(env: &[(&str, &str)], script: &Path) -> Output {
    let mut cmd = Command::new("bash");
    // The default release (setup.sh's table), whatever the caller chose.
    cmd.arg(script).env_remove("LIBTORCH").env_remove("CE_LIBTORCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running setup.sh")
}

fn one_error_line(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("setup: ") && lines[0].contains(expected), "{stderr}");
}

#[test]
fn libtorch_from_the_environment_is_used_as_is() {
    let script = root().join("scripts/setup.sh");
    let lib_dir = Path::new(env!("CE_LIBTORCH_LIB"));
    let libtorch = lib_dir.parent().unwrap().to_str().unwrap();
    let out = setup(&[("LIBTORCH", libtorch)], &script);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("libtorch: {libtorch} (from LIBTORCH; nothing installed)"));
    one_error_line(
        &setup(&[("LIBTORCH", "/nonexistent")], &script),
        "LIBTORCH=/nonexistent has no lib/ directory",
    );
}

#[test]
fn missing_python_is_one_line() {
    let out = setup(&[("PYTHON", "/nonexistent/python3")], &root().join("scripts/setup.sh"));
    one_error_line(&out, "Python 3 not found (/nonexistent/python3)");
}

#[test]
fn another_torch_in_the_venv_is_one_line() {
    // A copy of the script beside a fake venv whose python reports torch 2.5.0.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("setup-wrong-torch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::create_dir_all(dir.join(".venv/bin")).unwrap();
    std::fs::copy(root().join("scripts/setup.sh"), dir.join("scripts/setup.sh")).unwrap();
    let fake = dir.join(".venv/bin/python");
    std::fs::write(&fake, "#!/bin/sh\ncase \"$*\" in *version*) echo 2.5.0;; esac\nexit 0\n")
        .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    // A stamp from a venv that once held the right torch (setup.sh's fast
    // path) must not hide the torch it holds now: no torch-2.13.0 metadata.
    let torch_dir = Path::new(env!("CE_LIBTORCH_LIB")).parent().unwrap();
    std::fs::write(dir.join(".venv/.ce-setup-ok"), format!("2.13.0 {}\n", torch_dir.display()))
        .unwrap();
    let out = setup(&[], &dir.join("scripts/setup.sh"));
    one_error_line(&out, "found torch 2.5.0 in");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs torch 2.13.0"));
}

#[test]
fn setup_is_idempotent() {
    // With the venv in place (the test run itself needed it), setup installs
    // nothing and says where libtorch is.
    if common::reference_python().is_none() {
        return;
    }
    // The release this build is for (CE_LIBTORCH: 2.13, or 2.11 in the
    // 2.11 build's copy of the tree).
    let version = cross_entropy_tch::LIBTORCH_VERSION;
    let release = version.rsplit_once('.').map_or(version, |(major_minor, _)| major_minor);
    let out = setup(&[("CE_LIBTORCH", release)], &root().join("scripts/setup.sh"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("installing"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("libtorch: ") && stdout.contains("site-packages/torch"), "{stdout}");
}
