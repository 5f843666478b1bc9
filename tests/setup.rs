//! scripts/setup.sh: idempotent, honours LIBTORCH, and fails with one clear
//! line when Python is missing or the venv holds another torch.

mod common;

use common::root;
use std::path::{Path, PathBuf};
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

/// scripts/pyfork-python (the tests' Python under scripts/test.sh, through
/// its fork server) against the Python it stands for, on what a run can
/// tell: argv, working directory, environment, stdin, both outputs, the
/// thread count OMP_NUM_THREADS asks for, the exit status, an uncaught
/// exception and the signal that ends it. Without a server it is that
/// Python itself, and the two must agree all the same.
#[test]
fn the_fork_servers_python_is_the_plain_python() {
    let Some(python) = common::reference_python() else {
        return;
    };
    let real = std::env::var_os("CE_PYFORK_PYTHON").map_or(python.clone(), PathBuf::from);
    let client = root().join("scripts/pyfork-python");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyfork");
    std::fs::create_dir_all(&dir).unwrap();
    let script = r#"
import os, sys, torch
seed = torch.initial_seed()
print(sys.argv, os.getcwd(), os.environ.get("CE_PROBE"), sys.path[0] == "", __name__)
print(sys.stdin.read().upper(), torch.get_num_threads(), torch.manual_seed(5) and torch.rand(2).tolist())
print("seed", seed, file=sys.stderr)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise ValueError("uncaught")
if sys.argv[1] == "term":
    os.kill(os.getpid(), 15)
sys.exit(int(sys.argv[1]))
"#;
    let run = |program: &Path, arg: &str, threads: Option<&str>, unbuffered: bool| -> Output {
        use std::io::Write;
        let mut cmd = Command::new(program);
        cmd.args(["-c", script, arg, "x y"]).current_dir(&dir).env("CE_PROBE", "seen");
        cmd.env("CE_PYFORK_PYTHON", &real);
        match threads {
            Some(n) => cmd.env("OMP_NUM_THREADS", n),
            None => cmd.env_remove("OMP_NUM_THREADS"),
        };
        match unbuffered {
            true => cmd.env("PYTHONUNBUFFERED", "1"),
            false => cmd.env_remove("PYTHONUNBUFFERED"),
        };
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"piped in").unwrap();
        child.wait_with_output().unwrap()
    };
    let mut seeds = std::collections::BTreeSet::new();
    // A run killed by a signal keeps what it printed only unbuffered.
    let cases = [
        ("0", None, false),
        ("3", Some("1"), true),
        ("raise", None, false),
        ("term", Some("2"), false),
        ("term", None, true),
    ];
    for (arg, threads, unbuffered) in cases {
        let (plain, forked) =
            (run(&real, arg, threads, unbuffered), run(&client, arg, threads, unbuffered));
        let what = format!(
            "python -c SCRIPT {arg} (OMP_NUM_THREADS {threads:?}, PYTHONUNBUFFERED {unbuffered})"
        );
        assert_eq!(forked.status.code(), plain.status.code(), "{what}: status");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(forked.status.signal(), plain.status.signal(), "{what}: signal");
        assert_eq!(
            String::from_utf8_lossy(&forked.stdout),
            String::from_utf8_lossy(&plain.stdout),
            "{what}: stdout"
        );
        // Each run draws its own seed, as a fresh import does.
        let seed = |o: &Output| {
            let text = String::from_utf8_lossy(&o.stderr).to_string();
            text.lines().find(|l| l.starts_with("seed ")).map(str::to_string)
        };
        assert!(seed(&forked).is_some(), "{what}: no seed line");
        assert!(seeds.insert(seed(&forked)), "{what}: a seed seen before");
        // The traceback's last line and the rest of stderr (the lines that
        // name the file differ: the server's frame is one more).
        let last =
            |o: &Output| String::from_utf8_lossy(&o.stderr).lines().last().map(str::to_string);
        assert_eq!(last(&forked), last(&plain), "{what}: stderr");
        let printed = String::from_utf8_lossy(&plain.stdout).contains("PIPED IN");
        assert_eq!(printed, arg != "term" || unbuffered, "{what}: what stdout kept");
    }
}
