//! The binary finds libtorch by its rpath alone and really links
//! libtorch_cuda.so when the libtorch it was built against has it.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const LIB_DIR: &str = env!("CE_LIBTORCH_LIB");

fn dynamic_section() -> String {
    let out = Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_cross-entropy-tch")])
        .output()
        .expect("readelf (binutils) is needed for this test");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rpath_points_at_libtorch() {
    assert!(!LIB_DIR.is_empty(), "build.rs did not see DEP_TCH_LIBTORCH_LIB");
    let dynamic = dynamic_section();
    let runpath = dynamic
        .lines()
        .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .expect("the binary has an rpath");
    assert!(runpath.contains(LIB_DIR), "{runpath} does not name {LIB_DIR}");
    for lib in ["libtorch.so", "libtorch_cpu.so", "libc10.so"] {
        assert!(dynamic.contains(&format!("[{lib}]")), "{lib} is not NEEDED:\n{dynamic}");
    }
}

#[test]
fn links_libtorch_cuda_when_libtorch_has_it() {
    let dynamic = dynamic_section();
    if Path::new(LIB_DIR).join("libtorch_cuda.so").exists() {
        assert!(
            dynamic.contains("[libtorch_cuda.so]"),
            "{LIB_DIR} has libtorch_cuda.so but the binary does not link it:\n{dynamic}"
        );
    } else {
        skip(&format!("{LIB_DIR} is a CPU-only libtorch (no libtorch_cuda.so)"));
    }
}

#[test]
fn runs_without_ld_library_path() {
    // `bin()` removes LD_LIBRARY_PATH from the child's environment.
    let out = bin().args(["--device", "cpu", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // It ran libtorch, not just started: the run's JSON, with its loss.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the run's JSON");
    assert_eq!(doc["torch_version"], cross_entropy_tch::LIBTORCH_VERSION);
    let loss = doc["losses"][0].as_f64().expect("a loss");
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
}
