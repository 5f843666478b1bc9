//! `train` and `eval` as a user runs them: parity with `scripts/reference.py
//! train` (bit for bit on the CPU: the same ATen ops in the same order,
//! mini-batches and momentum included), the accuracy bars, checkpoints both
//! ways with PyTorch, outputs, and errors.

mod common;

use common::*;
use cross_entropy_tch::checkpoint::Checkpoint;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn json_of(out: std::process::Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} exited with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
}

fn f32_of(v: &Value) -> f32 {
    v.to_string().parse().unwrap()
}

fn assert_train_equal(rust: &Value, torch: &Value, what: &str) {
    assert_eq!(rust["data"], torch["data"], "{what}: data");
    assert_eq!(rust["confusion_matrix"], torch["confusion_matrix"], "{what}: confusion matrix");
    for key in [
        "seed",
        "epochs",
        "batch_size",
        "hidden",
        "dropout",
        "standardize",
        "optimizer",
        "clip_norm_type",
    ] {
        assert_eq!(rust["config"][key], torch["config"][key], "{what}: config.{key}");
    }
    // The optimizer's arguments: every one the reference passed to
    // torch.optim (its defaults included) has the same value here.
    let numbers = |v: &Value| -> Vec<Option<f64>> {
        match v.as_array() {
            Some(items) => items.iter().map(Value::as_f64).collect(),
            None => vec![v.as_f64().or(v.as_bool().map(f64::from))],
        }
    };
    let args = [
        "lr",
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
        "betas",
        "eps",
        "amsgrad",
        "alpha",
        "centered",
    ];
    let mut passed = 0;
    for key in args.into_iter().filter(|k| !torch["config"][k].is_null()) {
        assert_eq!(
            numbers(&rust["config"][key]),
            numbers(&torch["config"][key]),
            "{what}: config.{key}"
        );
        passed += 1;
    }
    assert!(passed >= 5, "{what}: only {passed} optimizer arguments in the reference's config");
    let (r, t) = (rust["epochs"].as_array().unwrap(), torch["epochs"].as_array().unwrap());
    assert_eq!(r.len(), t.len(), "{what}: epochs");
    for (a, b) in r.iter().zip(t) {
        for key in ["train_loss", "test_loss"] {
            assert_eq!(
                f32_of(&a[key]).to_bits(),
                f32_of(&b[key]).to_bits(),
                "{what}: epoch {} {key}: rust {} pytorch {}",
                a["epoch"],
                a[key],
                b[key]
            );
        }
        for key in ["epoch", "lr", "train_accuracy", "test_accuracy"] {
            assert_eq!(a[key].as_f64(), b[key].as_f64(), "{what}: epoch {} {key}", a["epoch"]);
        }
    }
}

/// Both programs with the same arguments and environment variables.
fn train_both_with(python: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> (Value, Value) {
    let mut full = vec!["train", "--json", "--device", "cpu", "--quiet"];
    full.extend_from_slice(args);
    let rust = json_of(
        bin().args(&full).envs(env.iter().copied()).output().unwrap(),
        &format!("cross-entropy-tch {full:?}"),
    );
    let torch = json_of(
        std::process::Command::new(python)
            .arg(root().join("scripts/reference.py"))
            .args(&full)
            .envs(env.iter().copied())
            .output()
            .unwrap(),
        &format!("reference.py {full:?}"),
    );
    (rust, torch)
}

/// `add(..., alpha=)` (Adam's L2 decay, RMSprop's momentum step) is one
/// fused multiply-add in libtorch's AVX2/AVX512 kernels and two roundings
/// in its default ones; `optim.rs` follows whichever libtorch runs.
#[test]
fn optimizers_follow_libtorchs_cpu_kernels_either_way() {
    let Some(python) = reference_python() else { return };
    for capability in ["default", "avx2"] {
        for extra in [
            &["--optimizer", "adam", "--lr", "0.05", "--weight-decay", "0.1"][..],
            &["--optimizer", "rmsprop", "--momentum", "0.5", "--weight-decay", "0.01"][..],
        ] {
            let mut args = vec!["--dataset", "wine", "--epochs", "20", "--batch-size", "16"];
            args.extend_from_slice(extra);
            let env = [("ATEN_CPU_CAPABILITY", capability)];
            let (rust, torch) = train_both_with(&python, &args, &env);
            assert_train_equal(
                &rust,
                &torch,
                &format!("ATEN_CPU_CAPABILITY={capability} {args:?}"),
            );
        }
    }
}

/// A batch larger than the split, however large, is the whole split: the
/// very run of no `--batch-size`.
#[test]
fn a_huge_batch_is_the_full_batch() {
    let run = |extra: &[&str]| {
        let mut args = vec!["train", "--json", "--quiet", "--device", "cpu", "--dataset", "iris"];
        args.extend_from_slice(&["--epochs", "5"]);
        args.extend_from_slice(extra);
        json_of(run_bin(&args), "train")["epochs"].clone()
    };
    let full = run(&[]);
    assert_eq!(run(&["--batch-size", "18446744073709551615"]), full);
    assert_eq!(run(&["--batch-size", "1000"]), full);
    assert_ne!(run(&["--batch-size", "7"]), full, "mini-batches do change the run");
}

#[test]
fn training_is_bit_equal_to_pytorch() {
    let Some(python) = reference_python() else { return };
    let variants: &[&[&str]] = &[
        &[],
        &["--momentum", "0.9"],
        &["--momentum", "0.9", "--batch-size", "16", "--autograd"],
        &["--batch-size", "16"],
        &["--batch-size", "16", "--momentum", "0.9", "--nesterov", "--weight-decay", "1e-3"],
        &[
            "--batch-size",
            "32",
            "--momentum",
            "0.5",
            "--dampening",
            "0.1",
            "--class-weights",
            "1,2,0.5",
            "--label-smoothing",
            "0.1",
        ],
        &["--no-standardize", "--lr", "0.01", "--test-fraction", "0.3", "--seed", "7"],
    ];
    // torch.optim.Adam / AdamW / RMSprop: ours (optim.rs), not tch's; on
    // wine only (each run starts a Python).
    let optimizers: &[&[&str]] = &[
        &["--optimizer", "adam", "--batch-size", "16"],
        &["--optimizer", "adam", "--lr", "0.05", "--weight-decay", "0.1", "--amsgrad"],
        &["--optimizer", "adamw", "--batch-size", "8"],
        &[
            "--optimizer",
            "adamw",
            "--lr",
            "0.02",
            "--betas",
            "0.8,0.99",
            "--eps",
            "1e-6",
            "--amsgrad",
        ],
        &["--optimizer", "rmsprop", "--batch-size", "16", "--centered", "--momentum", "0.5"],
        &["--optimizer", "rmsprop", "--alpha", "0.9", "--weight-decay", "0.01"],
        // torch.nn.utils.clip_grad_norm_ (each norm type) and clip_grad_value_.
        &["--batch-size", "16", "--clip-grad-norm", "0.5"],
        &["--clip-grad-norm", "0.1", "--clip-norm-type", "1", "--momentum", "0.9"],
        &[
            "--optimizer",
            "adam",
            "--lr",
            "0.05",
            "--clip-grad-norm",
            "0.05",
            "--clip-norm-type",
            "inf",
        ],
        &["--batch-size", "16", "--clip-grad-value", "0.01", "--clip-grad-norm", "0.3"],
        // torch.optim.lr_scheduler, stepped per epoch: the lr of every epoch
        // equal as f64, the training bit for bit.
        &["--scheduler", "step", "--step-size", "7", "--gamma", "0.5"],
        &["--scheduler", "multistep", "--milestones", "5,12,20", "--batch-size", "16"],
        &["--scheduler", "exponential", "--gamma", "0.9", "--optimizer", "adam", "--lr", "0.05"],
        &["--scheduler", "cosine", "--t-max", "7", "--eta-min", "0.01"],
        &["--scheduler", "linear", "--optimizer", "rmsprop", "--total-iters", "12"],
        // OneCycleLR per batch, cycling SGD's momentum (from 0), Adam's
        // beta1 and RMSprop's momentum; SequentialLR; ReduceLROnPlateau.
        &["--scheduler", "onecycle", "--max-lr", "0.5", "--batch-size", "16"],
        &[
            "--scheduler",
            "onecycle",
            "--max-lr",
            "0.05",
            "--optimizer",
            "adam",
            "--three-phase",
            "--anneal-strategy",
            "linear",
            "--batch-size",
            "32",
        ],
        &["--scheduler", "onecycle", "--max-lr", "0.02", "--optimizer", "rmsprop"],
        &["--scheduler", "warmup-cosine", "--warmup-epochs", "5", "--start-factor", "0.1"],
        &["--scheduler", "plateau", "--patience", "1", "--factor", "0.5", "--lr", "3"],
        &["--scheduler", "plateau", "--mode", "max", "--patience", "0", "--cooldown", "2"],
        // The MLP: Linear + ReLU (+ Dropout in train mode, masks from the
        // same generator as the shuffles), evaluated in eval mode.
        &["--hidden", "16,8", "--dropout", "0.2", "--batch-size", "16"],
        &["--hidden", "16,8", "--dropout", "0.2", "--batch-size", "16", "--autograd"],
        &["--hidden", "32", "--optimizer", "adam", "--lr", "0.01"],
        &[
            "--hidden",
            "8,8",
            "--dropout",
            "0.5",
            "--batch-size",
            "32",
            "--scheduler",
            "onecycle",
            "--max-lr",
            "0.3",
            "--clip-grad-norm",
            "1",
        ],
    ];
    let runs = ["iris", "wine"]
        .into_iter()
        .flat_map(|d| variants.iter().map(move |v| (d, *v)))
        .chain(optimizers.iter().map(|v| ("wine", *v)))
        // digits: 64 features, 10 classes, the MLP with dropout.
        .chain([("digits", &["--hidden", "64,32", "--dropout", "0.2", "--batch-size", "64"][..])])
        .chain([("digits", &["--batch-size", "32", "--momentum", "0.9"][..])]);
    let cases: Vec<Vec<&str>> = runs
        .map(|(dataset, extra)| {
            let mut args =
                vec!["train", "--json", "--device", "cpu", "--quiet", "--dataset", dataset];
            args.extend_from_slice(&["--epochs", "30"]);
            args.extend_from_slice(extra);
            args
        })
        .collect();
    // PyTorch's runs in one Python process (torch imported once).
    let batch: Vec<(PathBuf, Vec<&str>)> =
        cases.iter().map(|args| (std::env::temp_dir(), args.clone())).collect();
    let torch_runs = run_reference_batch(&python, &batch);
    for (args, torch) in cases.iter().zip(torch_runs) {
        let rust = json_of(run_bin(args), &format!("cross-entropy-tch {args:?}"));
        let torch = json_of(torch, &format!("reference.py {args:?}"));
        assert_train_equal(&rust, &torch, &format!("{args:?}"));
        // The exact fast step where it covers the run, autograd elsewhere.
        let autograd = args.contains(&"--autograd");
        let backward = if autograd { "autograd" } else { "manual" };
        assert_eq!(rust["backward"], backward, "{args:?}");
    }
}

/// `train --amp` against `torch.autocast("cpu", dtype)` (and
/// `torch.amp.GradScaler("cpu")` for fp16) in `scripts/reference.py`: every
/// epoch's losses, the accuracies and the confusion matrix bit for bit, for
/// SGD and Adam, MyModel and the MLP with dropout. fp16 starts from a scale
/// of 1e9, so that the first steps overflow and are skipped, and grows it
/// every 3 steps: the scaler's state after the run is PyTorch's too. Each
/// run also differs from its f32 run, so autocast did run.
#[test]
fn mixed_precision_is_bit_equal_to_pytorch_autocast() {
    let Some(python) = reference_python() else { return };
    let fp16 = ["--amp", "fp16", "--init-scale", "1e9", "--growth-interval", "3"];
    let runs: Vec<Vec<&str>> = vec![
            vec!["--dataset", "wine", "--amp", "bf16", "--batch-size", "16"],
            vec!["--dataset", "wine", "--amp", "bf16", "--optimizer", "adam", "--lr", "0.01"],
            vec![
                "--dataset",
                "digits",
                "--amp",
                "bf16",
                "--hidden",
                "32",
                "--dropout",
                "0.2",
                "--batch-size",
                "64",
                "--momentum",
                "0.9",
                "--lr",
                "0.05",
            ],
            [&["--dataset", "wine", "--batch-size", "16"][..], &fp16].concat(),
            [
                &[
                    "--dataset",
                    "digits",
                    "--hidden",
                    "32",
                    "--dropout",
                    "0.1",
                    "--batch-size",
                    "64",
                ][..],
                &["--optimizer", "adam", "--lr", "0.01", "--clip-grad-norm", "1"],
                &fp16,
            ]
            .concat(),
        ];
    let ck = |i: usize, who: &str| tmp(&format!("amp-{who}-{i}.safetensors"));
    let cases: Vec<Vec<String>> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut a = strings(&[&["--epochs", "8"][..], r].concat());
            a.extend(["--checkpoint".to_string(), ck(i, "torch").to_str().unwrap().to_string()]);
            train_args(&a)
        })
        .collect();
    let torch_runs = torch_outs(&python, &cases);
    for (i, (args, torch)) in cases.iter().zip(torch_runs).enumerate() {
        let what = format!("{args:?}");
        let mut rust_args = args.clone();
        *rust_args.last_mut().unwrap() = ck(i, "rust").to_str().unwrap().to_string();
        let rust = json_of(rust_out(&rust_args), &what);
        let torch = json_of(torch, &format!("reference.py {what}"));
        assert_train_equal(&rust, &torch, &what);
        assert_eq!(rust["backward"], "autograd", "{what}: --amp steps through autograd");
        assert_eq!(rust["config"]["amp"], torch["config"]["amp"], "{what}");
        assert_eq!(rust["skipped_steps"], torch["skipped_steps"], "{what}: skipped steps");
        assert_eq!(rust["grad_scale"], torch["grad_scale"], "{what}: the final scale");
        // The same run in f32: without --amp and the scaler's flags.
        let mut f32_flags = vec!["--epochs", "8"];
        let mut flags = runs[i].iter();
        while let Some(f) = flags.next() {
            match *f {
                "--amp" | "--init-scale" | "--growth-interval" => drop(flags.next()),
                _ => f32_flags.push(f),
            }
        }
        let f32_args = train_args(&strings(&f32_flags));
        let plain = json_of(rust_out(&f32_args), &format!("{f32_args:?}"));
        assert_ne!(
            rust["epochs"][0]["train_loss"], plain["epochs"][0]["train_loss"],
            "{what}: autocast changed nothing"
        );
        // The scaler's state after the run: PyTorch's scaler.state_dict().
        let scaler = |who| {
            let bytes = std::fs::read(ck(i, who)).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            meta.metadata()
                .clone()
                .unwrap_or_default()
                .get("grad_scaler")
                .map(|s| serde_json::from_str::<Value>(s).unwrap())
        };
        let (r, t) = (scaler("rust"), scaler("torch"));
        assert_eq!(r, t, "{what}: the GradScaler's state");
        if args.contains(&"fp16".to_string()) {
            let scale = r.as_ref().unwrap()["scale"].as_f64().unwrap();
            assert!(scale < 1e9, "{what}: no step was skipped (scale {scale})");
            assert!(rust["skipped_steps"].as_u64().unwrap() > 0, "{what}: no skipped step");
        } else {
            assert!(r.is_none(), "{what}: bf16 has no scaler");
        }
    }
}

#[test]
fn default_training_reaches_the_accuracy_bars() {
    for (dataset, bar) in [("iris", 0.93), ("wine", 0.95), ("digits", 0.93)] {
        let doc = json_of(run_bin(&["train", "--dataset", dataset, "--json", "--quiet"]), dataset);
        let acc = doc["final"]["test_accuracy"].as_f64().unwrap();
        assert!(acc >= bar, "{dataset}: test accuracy {acc} < {bar}");
        let m = doc["confusion_matrix"].as_array().unwrap();
        let total: i64 =
            m.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_i64().unwrap()).sum();
        assert_eq!(total, doc["data"]["test_rows"].as_i64().unwrap());
        assert!(doc["samples_per_second"].as_f64().unwrap() > 0.0);
    }
}

fn eval_json(python: Option<&PathBuf>, ck: &Path, extra: &[&str]) -> Value {
    let args = eval_args(ck, extra);
    match python {
        None => json_of(rust_out(&args), "cross-entropy-tch eval"),
        Some(py) => json_of(torch_outs(py, &[args]).remove(0), "reference.py eval"),
    }
}

fn assert_eval_equal(a: &Value, b: &Value, what: &str) {
    assert_eq!(f32_of(&a["loss"]).to_bits(), f32_of(&b["loss"]).to_bits(), "{what}: loss");
    assert_eq!(a["accuracy"].as_f64(), b["accuracy"].as_f64(), "{what}: accuracy");
    assert_eq!(a["confusion_matrix"], b["confusion_matrix"], "{what}: confusion");
}

/// `train --json --device cpu --quiet ARGS`, as both programs take it.
fn train_args(args: &[String]) -> Vec<String> {
    let mut full: Vec<String> =
        ["train", "--json", "--device", "cpu", "--quiet"].map(String::from).to_vec();
    full.extend_from_slice(args);
    full
}

/// `eval --json --device cpu --dataset iris --load CK EXTRA`.
fn eval_args(ck: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["eval", "--json", "--device", "cpu", "--dataset", "iris", "--load"]
            .map(String::from)
            .to_vec();
    args.push(ck.to_str().unwrap().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The binary on one command line.
fn rust_out(args: &[String]) -> std::process::Output {
    bin().args(args).output().expect("running the cross-entropy-tch binary")
}

/// `scripts/reference.py` on each command line, all in one Python process
/// ([`run_reference_batch`]: torch imported once, not once a case).
fn torch_outs(python: &Path, cases: &[Vec<String>]) -> Vec<std::process::Output> {
    let batch: Vec<(PathBuf, Vec<&str>)> = cases
        .iter()
        .map(|args| (std::env::temp_dir(), args.iter().map(String::as_str).collect()))
        .collect();
    run_reference_batch(python, &batch)
}

#[test]
fn checkpoints_round_trip_with_pytorch() {
    let Some(python) = reference_python() else { return };
    // MyModel, and the MLP (its `layers.N` names, dropout in training only).
    let runs: [(&str, &[&str]); 2] =
        [("linear", &["--momentum", "0.9"]), ("mlp", &["--hidden", "8,4", "--dropout", "0.25"])];
    let saves: Vec<(PathBuf, PathBuf)> = runs
        .iter()
        .map(|(name, _)| {
            (tmp(&format!("ours-{name}.safetensors")), tmp(&format!("theirs-{name}.safetensors")))
        })
        .collect();
    // The same training saved by each side (PyTorch's runs in one process).
    let trainings = |side: usize| -> Vec<Vec<String>> {
        runs.iter()
            .zip(&saves)
            .map(|((_, extra), (ours, theirs))| {
                let mut flags =
                    strings(&["--dataset", "iris", "--epochs", "40", "--batch-size", "24"]);
                flags.extend(strings(extra));
                let save = if side == 0 { ours } else { theirs };
                flags.extend(strings(&["--save", save.to_str().unwrap()]));
                train_args(&flags)
            })
            .collect()
    };
    let torch_trained = torch_outs(&python, &trainings(1));
    for (((name, _), args), torch) in runs.iter().zip(trainings(0)).zip(torch_trained) {
        let r = json_of(rust_out(&args), &format!("cross-entropy-tch {args:?}"));
        let t = json_of(torch, "reference.py train");
        assert_train_equal(&r, &t, &format!("{name}: training before the saves"));
    }
    for ((name, _), (ours, theirs)) in runs.iter().zip(&saves) {
        let (a, b) = (Checkpoint::read(ours).unwrap(), Checkpoint::read(theirs).unwrap());
        assert_eq!(a, b, "{name}: the checkpoints differ");
        assert!(a.standardizer.is_some());
        assert_eq!(a.layers.len(), 1 + a.hidden.len(), "{name}");
    }

    // Ours loads into PyTorch's model (strictly) and evaluates the same;
    // PyTorch's loads here and evaluates the same. And continuing from a
    // checkpoint matches too (the MLP's sizes come from the file).
    let mut cases = Vec::new();
    for (ours, theirs) in &saves {
        cases.push(eval_args(ours, &[]));
        cases.push(eval_args(theirs, &[]));
        cases.push(train_args(&strings(&[
            "--dataset",
            "iris",
            "--epochs",
            "5",
            "--load",
            ours.to_str().unwrap(),
        ])));
    }
    for (args, torch) in cases.iter().zip(torch_outs(&python, &cases)) {
        let what = format!("{args:?}");
        let (rust, torch) =
            (json_of(rust_out(args), &what), json_of(torch, &format!("reference.py {what}")));
        if args[0] == "eval" {
            assert_eval_equal(&rust, &torch, &what);
            assert!(rust["accuracy"].as_f64().unwrap() > 0.9, "{what}: {rust}");
        } else {
            assert_train_equal(&rust, &torch, &format!("continued training: {what}"));
        }
    }
}

#[test]
fn a_plain_pytorch_state_dict_loads() {
    let Some(python) = reference_python() else { return };
    let path = tmp("plain.safetensors");
    let script = format!(
        "import sys; sys.path.insert(0, {scripts:?}); import torch; from reference import MyModel\n\
         from safetensors.torch import save_file\n\
         torch.manual_seed(0); m = MyModel(4, 3)\n\
         save_file(m.state_dict(), {path:?})",
        scripts = root().join("scripts").to_str().unwrap(),
        path = path.to_str().unwrap()
    );
    let out = std::process::Command::new(&python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // No standardization statistics in it: asking for them is a clear error…
    let out = run_bin(&[
        "eval",
        "--dataset",
        "iris",
        "--load",
        path.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no standardization statistics") && stderr.contains("--no-standardize"),
        "{stderr}"
    );
    // …and raw features evaluate as in PyTorch.
    let rust = eval_json(None, &path, &["--no-standardize"]);
    let torch = eval_json(Some(&python), &path, &["--no-standardize"]);
    assert_eval_equal(&rust, &torch, "plain state_dict");
}

#[test]
fn a_csv_file_with_crlf_and_a_header_trains_like_the_bundled_set() {
    let iris = std::fs::read_to_string(root().join("data/iris.csv")).unwrap();
    let path = tmp("iris-crlf.csv");
    std::fs::write(&path, iris.replace('\n', "\r\n")).unwrap();
    let args = |data: &[&str]| {
        let mut a = vec!["train", "--json", "--quiet", "--device", "cpu", "--epochs", "20"];
        a.extend_from_slice(data);
        json_of(run_bin(&a), &format!("{a:?}"))
    };
    let from_file = args(&["--data", path.to_str().unwrap()]);
    let bundled = args(&["--dataset", "iris"]);
    assert_eq!(from_file["epochs"], bundled["epochs"]);
    assert_eq!(from_file["data"]["rows"], 150);
}

#[test]
fn train_writes_the_plot_the_csv_and_the_checkpoint() {
    // Its own folder: the check for stray temporary files below must not
    // see other tests' files, written in parallel.
    let own = tmp("outputs");
    std::fs::create_dir_all(&own).unwrap();
    let (plot, csv, ck) =
        (own.join("curves.svg"), own.join("metrics.csv"), own.join("model.safetensors"));
    for p in [&plot, &csv, &ck] {
        let _ = std::fs::remove_file(p);
    }
    let out = run_bin(&[
        "train",
        "--dataset",
        "iris",
        "--epochs",
        "50",
        "--device",
        "cpu",
        "--plot",
        plot.to_str().unwrap(),
        "--metrics-csv",
        csv.to_str().unwrap(),
        "--save",
        ck.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for what in [
        "data:      iris (150 rows, 4 features, 3 classes): 120 train, 30 test, standardized",
        "MyModel(linear=Linear(in_features=4, out_features=3, bias=True))",
        "50 epochs, full batch, SGD lr 0.5",
        "confusion matrix of the test split",
        "samples/s",
        "wrote:",
    ] {
        assert!(stdout.contains(what), "no '{what}' in:\n{stdout}");
    }
    // Progress lines on stderr (not a terminal here), at most about 20.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress = stderr.lines().filter(|l| l.starts_with("epoch")).count();
    assert!((10..=22).contains(&progress), "{progress} progress lines:\n{stderr}");

    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("accuracy")
            && svg.contains("train")
            && svg.contains("test")
    );
    assert!(svg.matches("<polyline").count() >= 4, "four curves expected");
    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy");
    assert!(lines[1].starts_with("1,0.5,"), "the lr of epoch 1: {}", lines[1]);
    assert_eq!(lines.len(), 51);
    assert!(lines[50].starts_with("50,"));
    assert_eq!(Checkpoint::read(&ck).unwrap().classes, 3);
    // No temporary files left next to them.
    let leftovers: Vec<_> = std::fs::read_dir(plot.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // --quiet: no progress, but the report.
    let out =
        run_bin(&["train", "--dataset", "iris", "--epochs", "5", "--quiet", "--device", "cpu"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for what in ["training:  5 epochs", "final:     train loss", "confusion matrix"] {
        assert!(stdout.contains(what), "no '{what}' in:\n{stdout}");
    }
    // Mini-batches with a shorter last batch (120 rows in 32s), through the
    // fast step and through autograd: nothing on stderr either (libtorch
    // once warned there on every resized step).
    for extra in [&[][..], &["--autograd"][..]] {
        let mut args = vec!["train", "--dataset", "iris", "--epochs", "5", "--quiet"];
        args.extend_from_slice(&["--device", "cpu", "--batch-size", "32"]);
        args.extend_from_slice(extra);
        let out = run_bin(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("final:     train loss"));
    }
}

#[test]
fn train_errors_are_one_line_and_nothing_is_written() {
    let plot = tmp("never.svg");
    let _ = std::fs::remove_file(&plot);
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--dataset", "iris", "--plot", "/nonexistent-dir/x.svg"],
            1,
            "--plot /nonexistent-dir/x.svg: cannot write in /nonexistent-dir",
        ),
        (
            &["--dataset", "iris", "--class-weights", "1,2"],
            2,
            "--class-weights: 2 class weights for 3 classes; give one per class",
        ),
        (&["--dataset", "iris", "--class-weights", "1,-2,1"], 2, "must be a finite number >= 0"),
        (&["--dataset", "iris", "--test-fraction", "1.5"], 2, "--test-fraction"),
        (&["--dataset", "iris", "--nesterov"], 2, "--nesterov: nesterov needs momentum > 0"),
        (&["--dataset", "iris", "--label-smoothing", "2"], 2, "between 0 and 1"),
        (&["--dataset", "iris", "--epochs", "0"], 2, "must be at least 1"),
        (&["--dataset", "mnist"], 2, "--dataset"),
        (&[], 2, "--dataset"),
        (&["--data", "/nonexistent.csv"], 2, "--data /nonexistent.csv: cannot open"),
        (
            &["--dataset", "iris", "--load", "/nonexistent.safetensors"],
            2,
            "--load /nonexistent.safetensors: cannot read",
        ),
        (
            &["--dataset", "iris", "--lr", "1e38", "--epochs", "50"],
            1,
            "training diverged: the train loss is inf after epoch 1 of 50",
        ),
    ];
    for (args, code, expected) in cases {
        let mut full = vec!["train", "--quiet", "--device", "cpu"];
        full.extend_from_slice(args);
        if *code == 1 && expected.contains("diverged") {
            full.extend(["--plot", plot.to_str().unwrap()]);
        }
        let out = run_bin(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: '{stderr}' lacks '{expected}'");
        assert!(!stderr.contains("panicked") && !stderr.contains("terminate called"));
        assert!(out.stdout.is_empty(), "{args:?}: stdout {}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(!plot.exists(), "a diverged run must not leave its plot");
}

/// `kill -9` during the final writes: no handler runs, so the write it stops
/// leaves its hidden `.NAME.tmp-PID`, but an output path never holds a cut
/// file: each is whole or absent. Each write is held open 400 ms (the
/// CE_COMMIT_PAUSE_MS hook) so the kills land inside them; a direct write of
/// the outputs fails this test (tried). A start-up probe's temporary file
/// lives for microseconds, too short for the 2 ms polls to see it in practice.
#[test]
fn a_killed_run_never_leaves_a_cut_output() {
    let dir = tmp("killed-final-writes");
    let mut inside_a_write = 0;
    // Timed from the first write's temporary file (the three writes take
    // 1.2 s from there), so that a slow start-up cannot move the kills.
    for delay_ms in [0u64, 200, 450, 650, 900, 1100] {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = bin()
            .args(["train", "--dataset", "iris", "--epochs", "20", "--quiet", "--device", "cpu"])
            .args(["--save", "m.safetensors", "--plot", "p.svg", "--metrics-csv", "m.csv"])
            .env("CE_COMMIT_PAUSE_MS", "400")
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A temporary file, or an output itself (where a direct write would
        // begin): the final writes have started.
        let writing = || {
            std::fs::read_dir(&dir).unwrap().any(|e| {
                let name = e.unwrap().file_name().to_string_lossy().to_string();
                name.contains(".tmp-") || ["m.safetensors", "p.svg", "m.csv"].contains(&&*name)
            })
        };
        wait_until(|| writing() || child.try_wait().unwrap().is_some(), "the final writes");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no handler, no cleanup
        child.wait().unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            match name.as_str() {
                "m.safetensors" => {
                    Checkpoint::read(&dir.join(&name)).expect("a whole --save file");
                }
                "p.svg" => {
                    let svg = std::fs::read_to_string(dir.join(&name)).unwrap();
                    assert!(svg.trim_end().ends_with("</svg>"), "a cut plot");
                }
                "m.csv" => {
                    let csv = std::fs::read_to_string(dir.join(&name)).unwrap();
                    assert_eq!(csv.lines().count(), 21, "a cut metrics file");
                }
                other if other.contains(".tmp-") => inside_a_write += 1,
                other => panic!("killed after {delay_ms} ms: an unexpected file {other}"),
            }
        }
    }
    assert!(inside_a_write >= 2, "only {inside_a_write} kills landed inside a write");
}

/// Polls `done` every 2 ms, for at most 60 s.
fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed().as_secs() < 60, "waited 60 s for {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Epochs `from..` of a run's `--json` against a resumed run's, all of them
/// (losses as f32 bits, lr, accuracies), and the final metrics.
fn assert_resumed_equal(straight: &Value, resumed: &Value, from: usize, what: &str) {
    let (s, r) = (straight["epochs"].as_array().unwrap(), resumed["epochs"].as_array().unwrap());
    assert_eq!(s.len() - from, r.len(), "{what}: epochs after the resume");
    assert!(!r.is_empty(), "{what}: no epoch ran after the resume");
    for (a, b) in s[from..].iter().zip(r) {
        for key in ["train_loss", "test_loss"] {
            assert_eq!(
                f32_of(&a[key]).to_bits(),
                f32_of(&b[key]).to_bits(),
                "{what}: {key} {a} {b}"
            );
        }
        for key in ["epoch", "lr", "train_accuracy", "test_accuracy"] {
            assert_eq!(a[key].as_f64(), b[key].as_f64(), "{what}: epoch {} {key}", a["epoch"]);
        }
    }
    assert_eq!(straight["confusion_matrix"], resumed["confusion_matrix"], "{what}");
}

#[test]
fn resume_is_exact_both_ways_with_pytorch() {
    let Some(python) = reference_python() else { return };
    // Optimizer state of each kind (momentum buffers, Adam's moments and
    // step counts, AMSGrad, RMSprop's averages), schedulers with state
    // (StepLR, ReduceLROnPlateau's counters, SequentialLR's two), dropout
    // masks drawn after the resume from the restored generator.
    // And mixed precision: bf16, and fp16 with the GradScaler's state
    // (a scale that backed off and grew, the growth tracker mid-interval).
    let runs: [&[&str]; 7] = [
        &["--momentum", "0.9", "--nesterov", "--batch-size", "16"],
        &["--amp", "bf16", "--optimizer", "adam", "--batch-size", "32"],
        &[
            "--amp",
            "fp16",
            "--init-scale",
            "1e9",
            "--growth-interval",
            "4",
            "--momentum",
            "0.9",
            "--batch-size",
            "16",
        ],
        &[
            "--optimizer",
            "adam",
            "--amsgrad",
            "--batch-size",
            "16",
            "--scheduler",
            "step",
            "--step-size",
            "3",
        ],
        &[
            "--optimizer",
            "rmsprop",
            "--centered",
            "--momentum",
            "0.5",
            "--hidden",
            "8",
            "--dropout",
            "0.3",
            "--batch-size",
            "32",
            "--scheduler",
            "plateau",
            "--patience",
            "1",
        ],
        &[
            "--scheduler",
            "warmup-cosine",
            "--warmup-epochs",
            "3",
            "--t-max",
            "15",
            "--hidden",
            "8,4",
            "--dropout",
            "0.2",
            "--batch-size",
            "32",
        ],
        &["--optimizer", "adamw", "--weight-decay", "0.1"],
    ];
    let base = ["train", "--json", "--quiet", "--device", "cpu", "--dataset", "wine"];
    let args = |flags: &[&str], epochs: &str, extra: Vec<String>| -> Vec<String> {
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.extend(flags.iter().map(|s| s.to_string()));
        a.extend(["--epochs".to_string(), epochs.to_string()]);
        a.extend(extra);
        a
    };
    let file = |who: &str, i: usize| tmp(&format!("resume-{who}-{i}.safetensors"));
    let path = |p: PathBuf| p.to_str().unwrap().to_string();
    // 10 epochs with a checkpoint, by each side (PyTorch's in one process).
    let mut torch_first = Vec::new();
    for (i, flags) in runs.iter().enumerate() {
        let ck = vec!["--checkpoint".to_string(), path(file("rust", i))];
        let a = args(flags, "10", ck);
        let out = bin().args(&a).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        torch_first.push(args(
            flags,
            "10",
            vec!["--checkpoint".to_string(), path(file("torch", i))],
        ));
    }
    let batch: Vec<(PathBuf, Vec<&str>)> = torch_first
        .iter()
        .map(|a| (std::env::temp_dir(), a.iter().map(String::as_str).collect()))
        .collect();
    for out in run_reference_batch(&python, &batch) {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Each side resumes the other's file (and its own); all equal 20 straight.
    let mut torch_resumes = Vec::new();
    for (i, flags) in runs.iter().enumerate() {
        let what = format!("{flags:?}");
        let straight = json_of(bin().args(args(flags, "20", vec![])).output().unwrap(), &what);
        for who in ["rust", "torch"] {
            let a = args(flags, "20", vec!["--resume".to_string(), path(file(who, i))]);
            let resumed = json_of(bin().args(&a).output().unwrap(), &what);
            assert_resumed_equal(&straight, &resumed, 10, &format!("rust from {who}: {what}"));
        }
        torch_resumes.push((
            straight,
            args(flags, "20", vec!["--resume".to_string(), path(file("rust", i))]),
        ));
    }
    let batch: Vec<(PathBuf, Vec<&str>)> = torch_resumes
        .iter()
        .map(|(_, a)| (std::env::temp_dir(), a.iter().map(String::as_str).collect()))
        .collect();
    for ((straight, a), out) in torch_resumes.iter().zip(run_reference_batch(&python, &batch)) {
        let resumed = json_of(out, &format!("reference.py {a:?}"));
        assert_resumed_equal(straight, &resumed, 10, &format!("pytorch from rust: {a:?}"));
    }
}

#[test]
fn a_killed_run_resumes_exactly() {
    // Digits with an MLP: long enough (about a second) to be killed while
    // it writes a checkpoint after every epoch.
    let flags = [
        "train",
        "--json",
        "--quiet",
        "--device",
        "cpu",
        "--dataset",
        "digits",
        "--hidden",
        "32",
        "--dropout",
        "0.1",
        "--batch-size",
        "16",
        "--momentum",
        "0.9",
        "--epochs",
        "30",
        "--scheduler",
        "onecycle",
        "--max-lr",
        "0.1",
    ];
    let straight = json_of(bin().args(flags).output().unwrap(), "the straight run");
    let mut resumed_runs = 0;
    // Its own folder: a SIGKILL during a write leaves that write's
    // temporary file (nothing can remove it), which other tests' checks for
    // stray temporary files must not see.
    let dir = tmp("killed-runs");
    std::fs::create_dir_all(&dir).unwrap();
    // Each checkpoint write is held open 60 ms (the CE_COMMIT_PAUSE_MS hook,
    // between writing the temporary file and renaming it). Some kills wait
    // for that temporary file to appear and land inside the write whatever
    // the machine's load (timed kills alone missed every write on a loaded
    // machine); the others are timed from the first complete checkpoint,
    // not from the start, so that a slow start-up cannot move them all
    // before it. A direct write of the checkpoint would leave a cut file
    // that --resume cannot read (tried: the test then fails).
    let mut inside_a_write = 0;
    let kills = [
        (0u64, true),
        (0, false),
        (40, false),
        (100, true),
        (170, false),
        (250, false),
        (400, true),
    ];
    for (k, (delay_ms, at_a_write)) in kills.into_iter().enumerate() {
        let ck = dir.join(format!("killed-{k}.safetensors"));
        let _ = std::fs::remove_file(&ck);
        let mut child = bin()
            .args(flags)
            .args(["--checkpoint", ck.to_str().unwrap(), "--checkpoint-every", "1"])
            .env("CE_COMMIT_PAUSE_MS", "60")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let tmp_file = dir.join(format!(".killed-{k}.safetensors.tmp-{}", child.id()));
        wait_until(|| ck.exists() || child.try_wait().unwrap().is_some(), "a first checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if at_a_write {
            wait_until(|| tmp_file.exists() || child.try_wait().unwrap().is_some(), "a write");
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if tmp_file.exists() {
            inside_a_write += 1; // nothing can remove it after a SIGKILL
            std::fs::remove_file(&tmp_file).unwrap();
        }
        if !ck.exists() {
            continue; // killed before the first epoch's checkpoint was whole
        }
        // Whatever the moment, the file is a whole resume checkpoint.
        let st = cross_entropy_tch::resume::read(&ck).expect("a complete resume checkpoint");
        if st.epoch >= 30 {
            continue; // it finished before the kill
        }
        let resumed = json_of(
            bin().args(flags).args(["--resume", ck.to_str().unwrap()]).output().unwrap(),
            "the resumed run",
        );
        let when = if at_a_write { " and then at a write" } else { "" };
        let what = format!("killed {delay_ms} ms after the first checkpoint{when}");
        assert_resumed_equal(&straight, &resumed, st.epoch, &what);
        resumed_runs += 1;
    }
    assert!(resumed_runs >= 2, "only {resumed_runs} kill points fell inside the run");
    assert!(inside_a_write >= 1, "no kill landed inside a checkpoint write");
}

#[test]
fn pt_state_dicts_load_as_in_pytorch_and_nothing_in_them_runs() {
    let Some(python) = reference_python() else { return };
    let dir = tmp("pt-files");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ran");
    let _ = std::fs::remove_file(&marker);
    // torch.save of MyModel's and an MLP's state_dict (an OrderedDict), of
    // a plain dict, and four files that are not a state dict of tensors:
    // one whose "weight" is a call of os.system (it would create `marker`
    // if anything ran it), one whose root is such a call, a whole model and
    // a checkpoint dict with an int in it.
    let script = format!(
        "import sys, os, torch; sys.path.insert(0, {scripts:?}); from reference import MyModel, MLP\n\
         d = {dir:?}\n\
         torch.manual_seed(0); m = MyModel(4, 3)\n\
         torch.save(m.state_dict(), d + '/ordered.pt')\n\
         torch.save(dict(m.state_dict()), d + '/plain.pt')\n\
         torch.manual_seed(1); torch.save(MLP(4, [8, 5], 3, 0.1).state_dict(), d + '/mlp.pt')\n\
         class Call:\n    def __reduce__(self): return (os.system, ('touch ' + {marker:?},))\n\
         torch.save({{'linear.weight': Call(), 'linear.bias': m.linear.bias}}, d + '/call.pt')\n\
         torch.save(Call(), d + '/root-call.pt')\n\
         torch.save(m, d + '/whole.pt')\n\
         torch.save({{'model': m.state_dict(), 'epoch': 3}}, d + '/nested.pt')\n",
        scripts = root().join("scripts").to_str().unwrap(),
        dir = dir.to_str().unwrap(),
        marker = marker.to_str().unwrap(),
    );
    let out = std::process::Command::new(&python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!marker.exists(), "the test's own torch.save ran the call");

    // Every reference run below in one Python process.
    let mut cases = Vec::new();
    for name in ["ordered.pt", "plain.pt", "mlp.pt"] {
        let path = dir.join(name);
        cases.push(eval_args(&path, &["--no-standardize"]));
        // Training on from it, as PyTorch's load_state_dict + training.
        let load = ["--dataset", "iris", "--epochs", "5", "--load", path.to_str().unwrap()];
        cases.push(train_args(&strings(&load)));
    }
    let refused = ["call.pt", "root-call.pt", "whole.pt", "nested.pt"];
    for name in refused {
        let path = dir.join(name);
        cases.push(strings(&[
            "eval",
            "--dataset",
            "iris",
            "--no-standardize",
            "--load",
            path.to_str().unwrap(),
        ]));
    }
    let torch = torch_outs(&python, &cases);
    for (args, torch) in cases.iter().zip(torch) {
        let what = format!("{args:?}");
        let rust = rust_out(args);
        if args.contains(&"--json".to_string()) {
            let (rust, torch) =
                (json_of(rust, &what), json_of(torch, &format!("reference {what}")));
            if args[0] == "eval" {
                assert_eval_equal(&rust, &torch, &what);
            } else {
                assert_train_equal(&rust, &torch, &format!("train --load: {what}"));
            }
            continue;
        }
        let path = args.last().unwrap();
        for (who, out) in [("rust", rust), ("pytorch", torch)] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{who} {path}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{who} {path}: {stderr}");
            assert!(stderr.contains(&format!("--load {path}: ")), "{stderr}");
            assert!(out.stdout.is_empty(), "{who} {path}");
        }
    }
    assert_eq!(cases.len(), 3 * 2 + refused.len());
    assert!(!marker.exists(), "loading a .pt ran code from it");
}

/// The exact fast step (`ManualStep`, on by default) against the autograd
/// step, for every mix it covers: each optimizer (with momentum, nesterov,
/// weight decay, AMSGrad, centered), class weights, both clippings, a
/// per-batch scheduler, mini-batches with a short last batch and the full
/// batch; and the MLP with and without dropout (its masks drawn in the same
/// order), down to a 1 x 1 hidden input (hidden size 1, a last batch of one
/// row), which autograd's `mm_mat1_backward` treats as column-major. Every
/// epoch's metrics and the final parameters are bit-equal, and the run says
/// which step it took, and label smoothing (with and without class
/// weights) takes the fast step too.
#[test]
fn the_fast_step_is_bit_equal_to_autograd_for_every_covered_mix() {
    use cross_entropy_tch::data::{Bundled, Dataset};
    use cross_entropy_tch::optim::{NormType, OptimizerConfig, OptimizerKind};
    use cross_entropy_tch::schedule::SchedulerConfig;
    use cross_entropy_tch::step::Backward;
    use cross_entropy_tch::training::{train, TrainConfig};
    use tch::Device;
    let _rng = rng_lock();
    let opt = |kind| OptimizerConfig::new(kind);
    let base = TrainConfig { epochs: 6, batch_size: Some(24), ..TrainConfig::default() };
    let mixes: Vec<(&str, Bundled, TrainConfig)> = vec![
        ("sgd", Bundled::Iris, base.clone()),
        ("sgd full batch", Bundled::Wine, TrainConfig { batch_size: None, ..base.clone() }),
        (
            "sgd nesterov, weight decay",
            Bundled::Digits,
            TrainConfig {
                optimizer: OptimizerConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 1e-3,
                    ..opt(OptimizerKind::Sgd)
                },
                ..base.clone()
            },
        ),
        (
            "adam amsgrad, class weights, clip norm",
            Bundled::Wine,
            TrainConfig {
                optimizer: OptimizerConfig { amsgrad: true, ..opt(OptimizerKind::Adam) },
                class_weights: Some(vec![0.5, 2.0, 1.0]),
                clip_grad_norm: Some(0.5),
                clip_norm_type: NormType::Inf,
                ..base.clone()
            },
        ),
        (
            "adamw, onecycle, clip value",
            Bundled::Digits,
            TrainConfig {
                optimizer: OptimizerConfig { weight_decay: 0.05, ..opt(OptimizerKind::AdamW) },
                scheduler: Some(SchedulerConfig::one_cycle(0.01)),
                clip_grad_value: Some(0.01),
                ..base.clone()
            },
        ),
        (
            "rmsprop centered, momentum",
            Bundled::Iris,
            TrainConfig {
                optimizer: OptimizerConfig {
                    lr: 0.01,
                    centered: true,
                    momentum: 0.5,
                    ..opt(OptimizerKind::RmsProp)
                },
                ..base.clone()
            },
        ),
        (
            "mlp, dropout, sgd momentum",
            Bundled::Digits,
            TrainConfig {
                hidden: vec![64, 32],
                dropout: 0.2,
                optimizer: OptimizerConfig { momentum: 0.9, ..opt(OptimizerKind::Sgd) },
                ..base.clone()
            },
        ),
        (
            "mlp, hidden 1, dropout 0.5, a last batch of one row",
            Bundled::Iris,
            TrainConfig { hidden: vec![1], dropout: 0.5, batch_size: Some(7), ..base.clone() },
        ),
        ("label smoothing", Bundled::Digits, TrainConfig { label_smoothing: 0.1, ..base.clone() }),
        (
            "mlp, dropout, label smoothing, class weights",
            Bundled::Wine,
            TrainConfig {
                hidden: vec![8],
                dropout: 0.3,
                label_smoothing: 0.2,
                class_weights: Some(vec![0.5, 2.0, 1.0]),
                ..base.clone()
            },
        ),
        (
            "mlp without dropout, adam, class weights",
            Bundled::Wine,
            TrainConfig {
                hidden: vec![16],
                optimizer: opt(OptimizerKind::Adam),
                class_weights: Some(vec![0.5, 2.0, 1.0]),
                ..base.clone()
            },
        ),
    ];
    for (what, which, config) in mixes {
        let data = Dataset::bundled(which).unwrap();
        let fast = train(&data, &config, Device::Cpu, None, |_| {}).unwrap();
        let slow_config = TrainConfig { fast_step: false, ..config.clone() };
        let slow = train(&data, &slow_config, Device::Cpu, None, |_| {}).unwrap();
        assert_eq!(fast.backward, Backward::Manual, "{what}");
        assert_eq!(slow.backward, Backward::Autograd, "{what}");
        assert_eq!(fast.epochs.len(), config.epochs, "{what}");
        assert_eq!(fast.epochs.len(), slow.epochs.len(), "{what}");
        for (a, b) in fast.epochs.iter().zip(&slow.epochs) {
            // EpochMetrics compares its f32 losses with ==; bits for NaN too.
            assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits(), "{what}, epoch {}", a.epoch);
            assert_eq!(a, b, "{what}, epoch {}", a.epoch);
        }
        let (a, b) = (fast.checkpoint(), slow.checkpoint());
        assert_eq!(a.layers.len(), b.layers.len());
        for (la, lb) in a.layers.iter().zip(&b.layers) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&la.weight), bits(&lb.weight), "{what}: final weight");
            assert_eq!(bits(&la.bias), bits(&lb.bias), "{what}: final bias");
        }
        assert_eq!(fast.confusion, slow.confusion, "{what}");
    }
    // ManualStep itself refuses a loss it does not cover (train offers
    // none: its losses always take the mean with the default ignore_index).
    use cross_entropy_tch::{CrossEntropyLoss, ManualStep, MyModel, Reduction};
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = MyModel::new(&vs.root(), 4, 3);
    let step = ManualStep::new(&model).unwrap();
    let x = tch::Tensor::zeros([2, 4], (tch::Kind::Float, Device::Cpu));
    let y = tch::Tensor::from_slice(&[0i64, 2]);
    assert!(ManualStep::covers(&CrossEntropyLoss::new().label_smoothing(0.1)));
    for loss in
        [CrossEntropyLoss::new().reduction(Reduction::Sum), CrossEntropyLoss::new().ignore_index(1)]
    {
        assert!(!ManualStep::covers(&loss));
        assert!(step.f_step(&model, &loss, &x, &y).is_err(), "a loss it does not cover");
    }
}

/// `scripts/trace_step.py` (the ATen calls of PyTorch's own step, which
/// `csrc/step.cpp` follows) runs, and PyTorch's step still makes the calls
/// ManualStep makes, in that order: the dropout's draws in the forward, the
/// smoothing term's sums and masks with class weights, and each autograd
/// node's kernels in the backward.
#[test]
fn pytorchs_step_makes_the_calls_the_fast_step_makes() {
    let Some(python) = reference_python() else { return };
    let out = std::process::Command::new(&python)
        .arg(root().join("scripts/trace_step.py"))
        .args(["--hidden", "4", "--dropout", "0.2", "--label-smoothing", "0.1"])
        .args(["--class-weights", "0.5,2,1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (forward, backward) = text.split_once("\nloss.backward()").expect("two sections");
    // Each line is "  NAME [shapes]", nested by indentation in call order.
    let calls = |section: &str| -> Vec<String> {
        section.lines().filter_map(|l| l.trim().split(" [").next()).map(str::to_string).collect()
    };
    let in_order = |calls: &[String], wanted: &[&str], what: &str| {
        let mut rest = calls.iter();
        for w in wanted {
            assert!(rest.any(|c| c == w), "{what}: {w} missing or out of order in {calls:?}");
        }
    };
    #[rustfmt::skip]
    let forward_calls = [
        "aten::addmm", "aten::relu", "aten::empty_like", "aten::bernoulli_", "aten::div_",
        "aten::mul", "aten::addmm", "aten::_log_softmax", "aten::nll_loss_forward",
        "aten::view", "aten::mul", "aten::sum", "aten::neg", "aten::eq", "aten::masked_fill_",
        "aten::bitwise_not", "aten::masked_select", "aten::flatten", "aten::gather",
        "aten::sum", "aten::div", "aten::mul", "aten::mul", "aten::add",
    ];
    in_order(&calls(forward), &forward_calls, "forward");
    #[rustfmt::skip]
    let backward_calls = [
        "MulBackward1", "aten::mul", "MulBackward1", "aten::mul", "DivBackward0", "aten::div",
        "SumBackward0", "aten::expand", "MaskedFillBackward0", "aten::masked_fill",
        "NegBackward0", "aten::neg", "SumBackward1", "aten::unsqueeze", "aten::expand",
        "MulBackward0", "aten::mul", "NllLossBackward0", "aten::nll_loss_backward", "aten::add_",
        "LogSoftmaxBackward0", "aten::_log_softmax_backward_data",
        "AddmmBackward0", "aten::mm", "aten::mm", "aten::sum",
        "MulBackward0", "aten::mul", "ReluBackward0", "aten::threshold_backward",
        "AddmmBackward0", "aten::mm", "aten::sum",
    ];
    in_order(&calls(backward), &backward_calls, "backward");
}
