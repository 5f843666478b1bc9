//! The bad-input battery: the real binary over every kind of bad flag, data
//! file, checkpoint and output path. Each case must give one line on stderr
//! naming the problem, exit status 2 (bad usage or input) or 1 (a failure
//! while running: a write, a diverged training), no panic or C++ abort, and
//! no output file left behind.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one case.
fn case_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("errors").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Input files a case needs, written into its directory before it runs.
enum Input {
    Text(&'static str, &'static str),
    Bytes(&'static str, Vec<u8>),
    Dir(&'static str),
    /// A real iris checkpoint from the binary (`--save`), then cut to `keep` bytes.
    IrisCheckpoint(&'static str, Option<usize>),
    Safetensors(&'static str, Vec<(&'static str, safetensors::Dtype, Vec<usize>)>),
    /// A torch.save file made by PyTorch before the case runs (`write_call_pt`).
    CallPt(&'static str),
}

struct Case {
    name: &'static str,
    args: Vec<&'static str>,
    inputs: Vec<Input>,
    code: i32,
    message: &'static str,
}

fn case(name: &'static str, args: &[&'static str], code: i32, message: &'static str) -> Case {
    Case { name, args: args.to_vec(), inputs: vec![], code, message }
}

fn with(mut c: Case, input: Input) -> Case {
    c.inputs.push(input);
    c
}

const OUTPUTS: [&str; 6] =
    ["--save", "out.safetensors", "--plot", "out.svg", "--metrics-csv", "out.csv"];

fn write_inputs(dir: &Path, inputs: &[Input]) {
    for input in inputs {
        match input {
            Input::Text(name, text) => std::fs::write(dir.join(name), text).unwrap(),
            Input::Bytes(name, bytes) => std::fs::write(dir.join(name), bytes).unwrap(),
            Input::Dir(name) => std::fs::create_dir_all(dir.join(name)).unwrap(),
            Input::IrisCheckpoint(name, keep) => {
                let path = dir.join(name);
                let out = run_bin(&[
                    "train",
                    "--dataset",
                    "iris",
                    "--epochs",
                    "2",
                    "--quiet",
                    "--device",
                    "cpu",
                    "--save",
                    path.to_str().unwrap(),
                ]);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                if let Some(keep) = keep {
                    let bytes = std::fs::read(&path).unwrap();
                    std::fs::write(&path, &bytes[..*keep.min(&bytes.len())]).unwrap();
                }
            }
            Input::CallPt(_) => {} // written by the test, which has the Python
            Input::Safetensors(name, tensors) => {
                let data: Vec<Vec<u8>> = tensors
                    .iter()
                    .map(|(_, dtype, shape)| {
                        vec![0u8; shape.iter().product::<usize>() * dtype.size()]
                    })
                    .collect();
                let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
                    .iter()
                    .zip(&data)
                    .map(|((n, dtype, shape), d)| {
                        (
                            *n,
                            safetensors::tensor::TensorView::new(*dtype, shape.clone(), d).unwrap(),
                        )
                    })
                    .collect();
                std::fs::write(dir.join(name), safetensors::serialize(views, &None).unwrap())
                    .unwrap();
            }
        }
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

fn cases() -> Vec<Case> {
    use safetensors::Dtype::{F32, F64};
    let gpu = tch::Cuda::is_available();
    let cuda_case = if gpu {
        case("cuda:99 on this GPU box", &["--device", "cuda:99"], 2, "CUDA device(s), cuda:0 to")
    } else {
        case("cuda without a GPU", &["--device", "cuda"], 2, "libtorch sees no CUDA device")
    };
    let train = |name, args: &[&'static str], code, message| {
        let mut a = vec!["train", "--quiet", "--device", "cpu"];
        a.extend_from_slice(args);
        a.extend_from_slice(&OUTPUTS);
        Case { name, args: a, inputs: vec![], code, message }
    };
    let data = |name, file: &'static str, text: &'static str, message| {
        with(train(name, &["--data", file], 2, message), Input::Text(file, text))
    };
    let eval = |name, file: &'static str, message| {
        case(name, &["eval", "--dataset", "iris", "--device", "cpu", "--load", file], 2, message)
    };
    vec![
        // ---- flags
        case(
            "batch size 0",
            &["--batch-size", "0"],
            2,
            "'--batch-size <BATCH_SIZE>': must be at least 1, got 0",
        ),
        case("negative batch size", &["--batch-size", "-3"], 2, "must be at least 1, got -3"),
        case("input size 0", &["--features", "0"], 2, "--features"),
        case(
            "0 classes",
            &["--classes", "0"],
            2,
            "'--classes <CLASSES>': must be at least 2, got 0",
        ),
        case("1 class", &["--classes", "1"], 2, "must be at least 2, got 1"),
        case("lr NaN", &["--lr", "nan"], 2, "the learning rate must be finite and >= 0, got nan"),
        case("lr inf", &["--lr", "inf"], 2, "the learning rate must be finite and >= 0, got inf"),
        case(
            "negative lr",
            &["--lr", "-0.5"],
            2,
            "the learning rate must be finite and >= 0, got -0.5",
        ),
        case("0 steps", &["--steps", "0"], 2, "'--steps <STEPS>': must be at least 1"),
        case("0 threads", &["--threads", "0"], 2, "'--threads <THREADS>': must be at least 1"),
        case(
            "unknown device",
            &["--device", "tpu"],
            2,
            "expected cpu, cuda, cuda:N or auto, got 'tpu'",
        ),
        case("bad cuda index", &["--device", "cuda:x"], 2, "expected cpu, cuda, cuda:N or auto"),
        cuda_case,
        case(
            "huge sizes",
            &["--batch-size", "1000000", "--features", "1000000"],
            2,
            "is over 1073741824 elements",
        ),
        case("unknown flag", &["--frobnicate"], 2, "unexpected argument '--frobnicate'"),
        train(
            "0 epochs",
            &["--dataset", "iris", "--epochs", "0"],
            2,
            "'--epochs <EPOCHS>': must be at least 1",
        ),
        train(
            "test fraction 0",
            &["--dataset", "iris", "--test-fraction", "0"],
            2,
            "must be between 0 and 1 (exclusive), got 0",
        ),
        train(
            "test fraction 1",
            &["--dataset", "iris", "--test-fraction", "1"],
            2,
            "must be between 0 and 1 (exclusive), got 1",
        ),
        train(
            "test fraction -0.2",
            &["--dataset", "iris", "--test-fraction", "-0.2"],
            2,
            "got -0.2",
        ),
        train(
            "class weights count",
            &["--dataset", "iris", "--class-weights", "1,2"],
            2,
            "--class-weights: 2 class weights for 3 classes; give one per class",
        ),
        train(
            "negative class weight",
            &["--dataset", "iris", "--class-weights", "1,-2,1"],
            2,
            "must be a finite number >= 0, got -2",
        ),
        train(
            "class weight not a number",
            &["--dataset", "iris", "--class-weights", "1,x,1"],
            2,
            "got x",
        ),
        train(
            "label smoothing 1.5",
            &["--dataset", "iris", "--label-smoothing", "1.5"],
            2,
            "must be between 0 and 1, got 1.5",
        ),
        train(
            "label smoothing -0.1",
            &["--dataset", "iris", "--label-smoothing", "-0.1"],
            2,
            "got -0.1",
        ),
        train(
            "negative momentum",
            &["--dataset", "iris", "--momentum", "-1"],
            2,
            "'--momentum <MOMENTUM>'",
        ),
        train(
            "weight decay NaN",
            &["--dataset", "iris", "--weight-decay", "nan"],
            2,
            "'--weight-decay <WEIGHT_DECAY>'",
        ),
        train(
            "nesterov without momentum",
            &["--dataset", "iris", "--nesterov"],
            2,
            "--nesterov: nesterov needs momentum > 0 and dampening 0 (got 0 and 0)",
        ),
        train("mini-batch 0", &["--dataset", "iris", "--batch-size", "0"], 2, "must be at least 1"),
        train("no data", &[], 2, "required arguments were not provided: --dataset <DATASET>"),
        train(
            "two data sources",
            &["--dataset", "iris", "--data", "x.csv"],
            2,
            "cannot be used with",
        ),
        train(
            "unknown dataset",
            &["--dataset", "mnist"],
            2,
            "invalid value 'mnist' for '--dataset <DATASET>'",
        ),
        // ---- data files
        train(
            "missing data file",
            &["--data", "missing.csv"],
            2,
            "--data missing.csv: cannot open: No such file",
        ),
        with(
            train("data is a directory", &["--data", "adir"], 2, "--data adir: is a directory"),
            Input::Dir("adir"),
        ),
        data(
            "empty file",
            "e.csv",
            "",
            "e.csv: no data rows (the file is empty or holds only a header)",
        ),
        data("header only", "h.csv", "a,b,label\n", "h.csv: no data rows"),
        data(
            "ragged rows",
            "r.csv",
            "1,2,0\n3,4,1\n5,6\n",
            "--data r.csv: line 3: 2 columns, expected 3 like the first data row",
        ),
        data(
            "non-numeric cell",
            "n.csv",
            "1,2,0\n3,abc,1\n",
            "--data n.csv: line 2, column 2: 'abc' is not a number",
        ),
        data(
            "NaN cell",
            "nan.csv",
            "1,2,0\nNaN,4,1\n",
            "--data nan.csv: line 2, column 1: 'NaN' is not a finite number",
        ),
        data(
            "inf cell",
            "inf.csv",
            "1,2,0\n3,-inf,1\n",
            "--data inf.csv: line 2, column 2: '-inf' is not a finite number",
        ),
        data(
            "negative label",
            "neg.csv",
            "1,2,0\n3,4,-1\n",
            "--data neg.csv: line 2, column 3 (the label): -1 is negative",
        ),
        data(
            "fractional label",
            "frac.csv",
            "1,2,0\n3,4,0.5\n",
            "--data frac.csv: line 2, column 3 (the label): '0.5' is not a whole number",
        ),
        data("label not a number", "word.csv", "1,2,0\n3,4,cat\n", "'cat' is not a class number"),
        data(
            "huge label",
            "big.csv",
            "1,2,0\n3,4,99999999\n",
            "99999999 is too large for a class number",
        ),
        data(
            "one class",
            "one.csv",
            "1,2,0\n3,4,0\n5,6,0\n",
            "one.csv: every row has label 0; classification needs at least 2 classes",
        ),
        data("one column", "col.csv", "1\n0\n", "--data col.csv: line 1: one column"),
        with(
            train(
                "too few rows for the split",
                &["--data", "few.csv", "--test-fraction", "0.9"],
                2,
                "--test-fraction 0.9: a test fraction of 0.9 takes 2 of 2 rows for test (rounded up) and leaves 0 for training",
            ),
            Input::Text("few.csv", "1,2,0\n3,4,1\n"),
        ),
        with(
            train(
                "not UTF-8",
                &["--data", "bin.csv"],
                2,
                "--data bin.csv: line 2: not UTF-8 text (byte 3)",
            ),
            Input::Bytes("bin.csv", b"1,2,0\n3,\xff,1\n".to_vec()),
        ),
        // ---- checkpoints
        eval(
            "missing checkpoint",
            "nope.safetensors",
            "--load nope.safetensors: cannot read: No such file",
        ),
        with(
            eval(
                "truncated checkpoint",
                "cut.safetensors",
                "--load cut.safetensors: not a valid safetensors file",
            ),
            Input::IrisCheckpoint("cut.safetensors", Some(100)),
        ),
        with(
            eval(
                "corrupt checkpoint",
                "junk.safetensors",
                "--load junk.safetensors: not a valid safetensors file",
            ),
            Input::Bytes("junk.safetensors", b"this is not a checkpoint at all".to_vec()),
        ),
        with(
            eval(
                "wrong tensor names",
                "names.safetensors",
                "no tensor named 'linear.weight' (the file has [\"fc.bias\", \"fc.weight\"])",
            ),
            Input::Safetensors(
                "names.safetensors",
                vec![("fc.weight", F32, vec![3, 4]), ("fc.bias", F32, vec![3])],
            ),
        ),
        with(
            eval("wrong dtype", "f64.safetensors", "linear.weight has dtype F64, expected F32"),
            Input::Safetensors(
                "f64.safetensors",
                vec![("linear.weight", F64, vec![3, 4]), ("linear.bias", F64, vec![3])],
            ),
        ),
        with(
            eval(
                "inconsistent shapes",
                "shapes.safetensors",
                "linear.weight has shape [3, 4] and linear.bias [5]",
            ),
            Input::Safetensors(
                "shapes.safetensors",
                vec![("linear.weight", F32, vec![3, 4]), ("linear.bias", F32, vec![5])],
            ),
        ),
        with(
            case(
                "checkpoint for other data",
                &["eval", "--dataset", "wine", "--device", "cpu", "--load", "iris.safetensors"],
                2,
                "the checkpoint's model takes 4 features (linear.weight is 3x4), the data has 13",
            ),
            Input::IrisCheckpoint("iris.safetensors", None),
        ),
        with(
            with(
                train(
                    "labels beyond the checkpoint's classes",
                    &["--data", "five.csv", "--load", "iris.safetensors"],
                    2,
                    "the checkpoint's model has 3 classes, the data has labels up to 5",
                ),
                Input::Text("five.csv", "1,2,3,4,0\n1,2,3,4,5\n1,2,3,4,1\n1,2,3,4,2\n1,2,3,4,0\n"),
            ),
            Input::IrisCheckpoint("iris.safetensors", None),
        ),
        // ---- outputs
        {
            let mut c = case(
                "plot in a missing directory",
                &[
                    "train",
                    "--dataset",
                    "iris",
                    "--quiet",
                    "--device",
                    "cpu",
                    "--plot",
                    "no/such/dir/p.svg",
                    "--save",
                    "out.safetensors",
                ],
                1,
                "--plot no/such/dir/p.svg: cannot write in no/such/dir",
            );
            c.inputs.push(Input::Dir("keep"));
            c
        },
        with(
            case(
                "save onto a directory",
                &["train", "--dataset", "iris", "--quiet", "--device", "cpu", "--save", "adir"],
                1,
                "--save adir: is a directory",
            ),
            Input::Dir("adir"),
        ),
        with(
            case(
                "csv under a file",
                &[
                    "train",
                    "--dataset",
                    "iris",
                    "--quiet",
                    "--device",
                    "cpu",
                    "--metrics-csv",
                    "f.txt/m.csv",
                ],
                1,
                "--metrics-csv f.txt/m.csv: cannot write in f.txt",
            ),
            Input::Text("f.txt", "x"),
        ),
        // ---- training
        train(
            "diverging training",
            &["--dataset", "iris", "--lr", "1e38"],
            1,
            "training diverged: the train loss is inf after epoch 1 of 200",
        ),
        train(
            "diverging mini-batches",
            &["--dataset", "iris", "--lr", "1e38", "--batch-size", "10"],
            1,
            // Where the overflow shows (a step, or an epoch's evaluation) may vary by CPU.
            "lower the learning rate (now 1e38)",
        ),
    ]
}

#[test]
fn every_bad_input_gets_one_clear_line() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let dir = case_dir(&format!("case{i:02}"));
        write_inputs(&dir, &c.inputs);
        let before = listing(&dir);
        let out = bin().args(&c.args).current_dir(&dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = Vec::new();
        if out.status.code() != Some(c.code) {
            problems.push(format!("exit {:?}, expected {}", out.status.code(), c.code));
        }
        if stderr.lines().count() != 1 || !stderr.starts_with("error: ") {
            problems.push("not one 'error: ...' line".to_string());
        }
        if !stderr.contains(c.message) {
            problems.push(format!("lacks '{}'", c.message));
        }
        if stderr.contains("panicked at") || stderr.contains("terminate called") {
            problems.push("a panic or an abort".to_string());
        }
        if !out.stdout.is_empty() {
            problems.push("wrote to stdout".to_string());
        }
        let after = listing(&dir);
        if after != before {
            problems.push(format!("left files: {after:?} (before: {before:?})"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} {:?}: {}\n    stderr: {}",
                c.name,
                c.args,
                problems.join("; "),
                stderr.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Past libtest's capture, so the count shows in every log.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "checked {} bad inputs", cases.len());
}

/// The guide's "Errors you may see" table, checked verbatim: each row's
/// input is made here, and the binary's stderr must be the row's message, the
/// whole line (`…` stands for any text), with the row's status.
#[test]
fn the_guides_error_table_is_verbatim() {
    use safetensors::Dtype::F32;
    let guide = std::fs::read_to_string(root().join("docs/guide.md")).unwrap();
    let table = guide
        .split("| you gave | you get | status |")
        .nth(1)
        .expect("the guide has the errors table");
    let rows: Vec<Vec<String>> = table
        .lines()
        .skip(2) // the header's rest and |---|
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect();
    assert!(rows.len() >= 20, "only {} rows", rows.len());
    let iris = |args: &[&'static str]| {
        let mut a = vec!["train", "--dataset", "iris", "--quiet", "--device", "cpu"];
        a.extend_from_slice(args);
        a
    };
    let eval = |file: &'static str, data: &'static str| {
        vec!["eval", "--dataset", data, "--device", "cpu", "--load", file]
    };
    let data = |file: &'static str| vec!["train", "--quiet", "--device", "cpu", "--data", file];
    let gpus = tch::Cuda::device_count();
    let python = reference_python();
    // How to make each row's input: (args, input files), one per message.
    type Recipe = (Vec<&'static str>, Vec<Input>);
    let recipe = |gave: &str| -> Option<Vec<Recipe>> {
        Some(match gave {
            "`--lr nan`" => vec![(vec!["--lr", "nan"], vec![])],
            "`--classes 1`" => vec![(vec!["--classes", "1"], vec![])],
            "`--device cuda` without a GPU" if gpus == 0 => {
                vec![(vec!["--device", "cuda"], vec![])]
            }
            "`--device cuda:7` on a 1-GPU machine" if gpus == 1 => {
                vec![(vec!["--device", "cuda:7"], vec![])]
            }
            "`train` with no data" => vec![(vec!["train"], vec![])],
            "`--class-weights 1,2` on 3 classes" => {
                vec![(iris(&["--class-weights", "1,2"]), vec![])]
            }
            "`--nesterov` alone" => vec![(iris(&["--nesterov"]), vec![])],
            "`--data missing.csv`" => vec![(data("missing.csv"), vec![])],
            "a ragged row" => {
                vec![(data("r.csv"), vec![Input::Text("r.csv", "1,2,0\n3,4,1\n5,6\n")])]
            }
            "a non-numeric or NaN cell" => vec![
                (data("n.csv"), vec![Input::Text("n.csv", "1,2,0\n3,abc,1\n")]),
                (data("n.csv"), vec![Input::Text("n.csv", "1,2,0\nNaN,4,1\n")]),
            ],
            "a bad label" => {
                vec![(data("neg.csv"), vec![Input::Text("neg.csv", "1,2,1\n3,4,-1\n")])]
            }
            "one class only" => {
                vec![(data("one.csv"), vec![Input::Text("one.csv", "1,2,0\n3,4,0\n")])]
            }
            "non-UTF-8 bytes" => {
                vec![(
                    data("bin.csv"),
                    vec![Input::Bytes("bin.csv", b"1,2,0\n3,\xff,1\n".to_vec())],
                )]
            }
            "a truncated checkpoint" => vec![(
                eval("cut.safetensors", "iris"),
                vec![Input::IrisCheckpoint("cut.safetensors", Some(100))],
            )],
            "a checkpoint with other names" => vec![(
                eval("names.safetensors", "iris"),
                vec![Input::Safetensors(
                    "names.safetensors",
                    vec![("fc.weight", F32, vec![3, 4]), ("fc.bias", F32, vec![3])],
                )],
            )],
            "a `.pt` that is not a state dict of tensors" if python.is_some() => {
                vec![(eval("model.pt", "iris"), vec![Input::CallPt("model.pt")])]
            }
            "a broken `.pt`" => vec![(
                eval("model.pt", "iris"),
                vec![Input::Bytes("model.pt", b"PK\x03\x04archive/data.pkl".to_vec())],
            )],
            "an iris model on wine" => vec![(
                eval("iris.safetensors", "wine"),
                vec![Input::IrisCheckpoint("iris.safetensors", None)],
            )],
            "`--amp fp32`" => vec![(iris(&["--amp", "fp32"]), vec![])],
            "`--amp bf16 --init-scale 4`" => {
                vec![(iris(&["--amp", "bf16", "--init-scale", "4"]), vec![])]
            }
            "`bench --amp bf16 --backward manual`" => {
                let args = ["bench", "--device", "cpu", "--amp", "bf16", "--backward", "manual"];
                vec![(args.to_vec(), vec![])]
            }
            "`--plot no/such/dir/p.svg`" => vec![(iris(&["--plot", "no/such/dir/p.svg"]), vec![])],
            "`--lr 1e38`" => vec![(iris(&["--lr", "1e38"]), vec![])],
            _ => return None,
        })
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (r, row) in rows.iter().enumerate() {
        let [gave, get, status] = row.as_slice() else { panic!("row {r}: {row:?}") };
        let messages: Vec<&str> = get.split('`').skip(1).step_by(2).collect();
        let Some(recipes) = recipe(gave) else {
            // Only the device rows (and the .pt one without PyTorch to
            // make the file, outside CI) may go unchecked here.
            assert!(
                gave.contains("--device cuda") || (gave.contains(".pt") && !is_ci()),
                "no recipe for the table's row {gave}"
            );
            skip_part(&format!("the errors table's row {gave}: not this machine's case"));
            continue;
        };
        assert_eq!(recipes.len(), messages.len(), "{gave}: one input per message");
        for (i, ((args, inputs), want)) in recipes.into_iter().zip(messages).enumerate() {
            let dir = case_dir(&format!("table{r:02}-{i}"));
            for input in &inputs {
                if let Input::CallPt(name) = input {
                    write_call_pt(python.as_ref().unwrap(), &dir.join(name));
                }
            }
            write_inputs(&dir, &inputs);
            let out = bin().args(&args).current_dir(&dir).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
            let code = out.status.code().map(|c| c.to_string());
            if code.as_deref() != Some(status.as_str()) || !matches_pattern(line, want) {
                failures.push(format!(
                    "{gave}: status {code:?} (table: {status})\n  got:   {line}\n  table: {want}"
                ));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "the table is not what the binary says:\n{}", failures.join("\n"));
    assert!(checked >= 19, "only {checked} messages checked");
}

/// `line` is `pattern`, where each `…` in the pattern stands for any text.
fn matches_pattern(line: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    if parts.len() == 1 {
        return line == pattern;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    let Some(mut rest) = line.strip_prefix(first) else { return false };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last) && rest.len() >= last.len()
}

/// A torch.save file whose `linear.weight` is a call of os.system: what
/// `--load` must refuse without running it.
fn write_call_pt(python: &Path, path: &Path) {
    let script = format!(
        "import os, torch\n\
         class Call:\n    def __reduce__(self): return (os.system, ('true',))\n\
         torch.save({{'linear.weight': Call(), 'linear.bias': torch.zeros(3)}}, {path:?})\n",
        path = path.to_str().unwrap()
    );
    let out = std::process::Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_pattern_matcher_matches_only_what_it_should() {
    assert!(matches_pattern("error: a (b)", "error: a (b)"));
    assert!(!matches_pattern("error: a (b) x", "error: a (b)"));
    assert!(matches_pattern("error: x: not valid (deep cause)", "error: x: not valid (…)"));
    assert!(!matches_pattern("error: x: not valid (deep cause", "error: x: not valid (…)"));
    assert!(matches_pattern(
        "error: --data n.csv: line 2, column 1: 'NaN' is not a finite number",
        "… 'NaN' is not a finite number"
    ));
    assert!(!matches_pattern("error: 'NaN' is a number", "… 'NaN' is not a finite number"));
}

/// "An unwritable output path fails before training starts": a run that
/// would train for minutes (digits, 100000 epochs) ends within a second of
/// the binary's own start-up (the time `--version` takes, libtorch's loading
/// included), for each output flag, with one line, status 1 and no file.
#[test]
fn unwritable_outputs_fail_within_a_second() {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    assert!(bin().arg("--version").output().unwrap().status.success());
    let startup = start.elapsed();
    let dir = case_dir("unwritable");
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    for flag in ["--save", "--checkpoint", "--metrics-csv", "--plot"] {
        for target in ["no/such/dir/out", "a-directory"] {
            let args = [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "100000",
                "--quiet",
                "--device",
                "cpu",
                flag,
                target,
            ];
            let before = listing(&dir);
            let start = Instant::now();
            let out = bin().args(args).current_dir(&dir).output().unwrap();
            let took = start.elapsed();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{flag} {target}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{flag} {target}: {stderr}");
            assert!(stderr.starts_with(&format!("error: {flag} {target}: ")), "{stderr}");
            assert!(out.stdout.is_empty(), "{flag} {target}: training began");
            assert_eq!(listing(&dir), before, "{flag} {target}: a file was left");
            assert!(
                took < startup + Duration::from_secs(1),
                "{flag} {target}: failed after {took:?} (start-up {startup:?})"
            );
        }
    }
}
