//! Link arguments for the binaries, tests and examples of this crate.
//!
//! torch-sys finds libtorch and tells us its lib dir through
//! `DEP_TCH_LIBTORCH_LIB` (its `links = "tch"` key; we see it because
//! torch-sys is a direct dependency). With it we:
//! - embed an rpath to that dir, so the binary runs without `LD_LIBRARY_PATH`;
//! - link `libtorch_cuda.so` (when that libtorch has it) and `libtorch.so`
//!   with `--no-as-needed`: nothing in our code calls into them directly, so
//!   the linker's default `--as-needed` would drop them, CUDA would never be
//!   registered, and `Cuda::is_available()` would be false on a GPU machine.
use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        // torch-sys built in doc-only mode (docs.rs): nothing to link.
        println!("cargo:rustc-env=CE_LIBTORCH_LIB=");
        println!("cargo:rustc-env=CE_LIBTORCH_VERSION=unknown");
        return;
    };
    let lib = Path::new(&lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    compile_shims(lib);
    // Lets tests check the link (`readelf -d`) against the same dir.
    println!("cargo:rustc-env=CE_LIBTORCH_LIB={lib_dir}");
    println!("cargo:rustc-env=CE_LIBTORCH_VERSION={}", libtorch_version(lib));
}

/// The C++ that tch does not bind: csrc/rng.cpp (`torch.get_rng_state()` /
/// `set_rng_state()` for the CPU generator), csrc/step.cpp (the exact
/// fast step's kernels, among them `nll_loss_forward`'s `total_weight`, and
/// its evaluation), csrc/log_softmax.cpp (ATen's log_softmax and its
/// backward for a few classes, the same bits at a tenth of the cost) and
/// csrc/optim.cpp (the SGD, Adam and RMSprop steps with PyTorch's own
/// scalar arguments; csrc/below_autograd.h says how both call kernels) and
/// csrc/amp.cpp (torch.autocast's region and GradScaler's unscale kernel).
/// Built against the headers of the libtorch torch-sys found
/// (`lib/../include`), with its C++ ABI (`LIBTORCH_CXX11_ABI`, 1 unless set:
/// every libtorch 2.x wheel since 2.7).
fn compile_shims(lib: &Path) {
    println!("cargo:rerun-if-changed=csrc/error.h");
    println!("cargo:rerun-if-changed=csrc/below_autograd.h");
    println!("cargo:rerun-if-changed=csrc/error.cpp");
    println!("cargo:rerun-if-changed=csrc/log_softmax.h");
    println!("cargo:rerun-if-changed=csrc/log_softmax.cpp");
    println!("cargo:rerun-if-changed=csrc/rng.cpp");
    println!("cargo:rerun-if-changed=csrc/step.cpp");
    println!("cargo:rerun-if-changed=csrc/optim.cpp");
    println!("cargo:rerun-if-changed=csrc/amp.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let root = lib.parent().expect("libtorch's lib dir has a parent");
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    cc::Build::new()
        .cpp(true)
        .file("csrc/error.cpp")
        .file("csrc/log_softmax.cpp")
        .file("csrc/rng.cpp")
        .file("csrc/step.cpp")
        .file("csrc/optim.cpp")
        .file("csrc/amp.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("ce_shims");
    compile_distributed(root, &abi);
}

/// csrc/distributed.cpp (c10d's store, process group and collectives) and
/// csrc/gloo.cpp (the one file with gloo's headers, which the torch wheel
/// lacks: Debian's libgloo-dev, or `GLOO_INCLUDE`; see build-notes.md, "The
/// gloo headers"). c10d's headers want C++20 and compile to nothing
/// without USE_DISTRIBUTED and USE_C10D_GLOO. Every c10d and gloo symbol
/// is libtorch_cpu.so's: nothing links Debian's libgloo.
fn compile_distributed(root: &Path, abi: &str) {
    println!("cargo:rerun-if-changed=csrc/distributed.cpp");
    println!("cargo:rerun-if-changed=csrc/gloo.cpp");
    println!("cargo:rerun-if-changed=csrc/nccl.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    let gloo = env::var("GLOO_INCLUDE").unwrap_or_else(|_| "/usr/include".to_string());
    if !Path::new(&gloo).join("gloo/context.h").exists() {
        panic!(
            "gloo's headers are not in {gloo} (gloo/context.h): install Debian's libgloo-dev \
             (scripts/setup.sh does where it can), or set GLOO_INCLUDE to the directory \
             holding gloo/ (build-notes.md)"
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/distributed.cpp")
        .file("csrc/gloo.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++20")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag("-DUSE_DISTRIBUTED")
        .flag("-DUSE_C10D_GLOO")
        .warnings(false);
    match nccl_includes(root) {
        Ok(dirs) => {
            build.file("csrc/nccl.cpp").includes(dirs).define("CE_WITH_NCCL", None);
            build.flag("-DUSE_C10D_NCCL").flag("-DUSE_CUDA");
        }
        Err(why) => println!("cargo:warning=no NCCL backend in this build: {why}"),
    }
    build.compile("ce_distributed");
}

/// The headers csrc/nccl.cpp needs, where this libtorch can run NCCL
/// (`libtorch_cuda.so`, which holds ProcessGroupNCCL's code): a torch
/// wheel's `nvidia/` beside `torch/` (its `nccl/include`, and `cu13/include`
/// with the `nvidia-cuda-crt` and `nvidia-cuda-cccl` packages of the wheel's
/// CUDA release, which scripts/setup.sh installs), or `CE_CUDA_INCLUDE`
/// (directories, `:`-separated) for an unzipped libtorch with a CUDA
/// toolkit and NCCL of its own. Why not, otherwise.
fn nccl_includes(root: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    println!("cargo:rerun-if-env-changed=CE_CUDA_INCLUDE");
    if !root.join("lib/libtorch_cuda.so").exists() {
        return Err("this libtorch has no libtorch_cuda.so".to_string());
    }
    let dirs: Vec<std::path::PathBuf> = match env::var("CE_CUDA_INCLUDE") {
        Ok(dirs) => env::split_paths(&dirs).collect(),
        Err(_) => {
            let nvidia = root.join("../nvidia");
            ["nccl/include", "cu13/include", "cu13/include/cccl"]
                .iter()
                .map(|d| nvidia.join(d))
                .filter(|d| d.is_dir())
                .collect()
        }
    };
    let needed = ["nccl.h", "cuda_runtime_api.h", "crt/host_config.h", "cuda/std/atomic"];
    for header in needed {
        let Some(dir) = dirs.iter().find(|d| d.join(header).exists()) else {
            return Err(format!(
                "{header} is not in {dirs:?} (scripts/setup.sh installs the wheel's \
                 nvidia-cuda-crt and nvidia-cuda-cccl; build-notes.md, \"NCCL\")"
            ));
        };
        println!("cargo:rerun-if-changed={}", dir.join(header).display());
    }
    Ok(dirs)
}

/// `MAJOR.MINOR.PATCH` from libtorch's `version.h`, next to its lib dir.
fn libtorch_version(lib: &Path) -> String {
    let headers = ["include/torch/headeronly/version.h", "include/torch/version.h"];
    let Some(text) = headers
        .iter()
        .filter_map(|h| lib.parent().map(|root| root.join(h)))
        .find_map(|h| std::fs::read_to_string(h).ok())
    else {
        return "unknown".to_string();
    };
    let part = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("#define TORCH_VERSION_{name} ")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".to_string())
    };
    format!("{}.{}.{}", part("MAJOR"), part("MINOR"), part("PATCH"))
}
