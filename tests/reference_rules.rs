//! What the binary refuses, against what `scripts/reference.py` refuses: the
//! reference is an independent PyTorch program that writes the same rules
//! out again (flag ranges, numbers as Rust's `str::parse` reads them, the CSV
//! rules of src/data.rs, the checkpoint rules of src/checkpoint.rs and
//! src/training.rs), so a rule changed on one side only fails here.
//!
//! Every case runs both programs with the same arguments in the same fresh
//! directory. A bad input must be refused by both: exit status 2, exactly one
//! non-empty line on stderr, nothing on stdout. A few failures while running
//! (status 1) and a few good inputs (status 0, so that refusing everything
//! cannot pass) are in the table too. Only the status and the shape of the
//! output are compared, not the wording.

mod common;

use common::*;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What a case writes into its directory before it runs.
enum Input {
    File(&'static str, Vec<u8>),
    Dir(&'static str),
}

struct Case {
    name: &'static str,
    args: Vec<&'static str>,
    inputs: Vec<Input>,
    /// 2: refused (flags, data, checkpoint); 1: failed while running; 0: accepted.
    code: i32,
}

/// The arguments in `s`, split at whitespace.
fn words(s: &'static str) -> Vec<&'static str> {
    s.split_whitespace().collect()
}

fn case(name: &'static str, args: &[&'static str], code: i32) -> Case {
    Case { name, args: args.to_vec(), inputs: vec![], code }
}

fn with(mut c: Case, input: Input) -> Case {
    c.inputs.push(input);
    c
}

/// `train --quiet --device cpu ARGS`.
fn train(name: &'static str, args: &[&'static str], code: i32) -> Case {
    let mut c = case(name, &["train", "--quiet", "--device", "cpu"], code);
    c.args.extend_from_slice(args);
    c
}

/// `train --data d.csv --epochs 1 EXTRA` on a file holding `text`.
fn csv(name: &'static str, text: &[u8], code: i32, extra: &[&'static str]) -> Case {
    let mut c = train(name, &["--data", "d.csv", "--epochs", "1"], code);
    c.args.extend_from_slice(extra);
    with(c, Input::File("d.csv", text.to_vec()))
}

/// `eval --dataset iris --device cpu --load m.safetensors EXTRA` on `bytes`.
fn checkpoint(name: &'static str, bytes: Vec<u8>, code: i32, extra: &[&'static str]) -> Case {
    let args = ["eval", "--dataset", "iris", "--device", "cpu", "--load", "m.safetensors"];
    let mut c = case(name, &args, code);
    c.args.extend_from_slice(extra);
    with(c, Input::File("m.safetensors", bytes))
}

/// A safetensors file written by hand: `(name, dtype, shape)` tensors of
/// zero bytes, and string metadata.
fn safetensors(tensors: &[(&str, &str, &[usize])], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        let meta = metadata.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        header.insert("__metadata__".to_string(), Value::Object(meta));
    }
    let mut offset = 0;
    for (name, dtype, shape) in tensors {
        let size = match *dtype {
            "F32" => 4,
            "F64" => 8,
            other => panic!("no size for dtype {other}"),
        };
        let bytes = size * shape.iter().product::<usize>();
        header.insert(
            name.to_string(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    // The header padded with spaces to a multiple of 8 bytes, as writers do.
    let text = Value::Object(header).to_string();
    let width = text.len().next_multiple_of(8);
    let text = format!("{text:width$}");
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.resize(out.len() + offset, 0);
    out
}

/// A checkpoint of `linear.weight` and `linear.bias` of these shapes, no metadata.
fn model(weight: &[usize], bias: &[usize]) -> Vec<u8> {
    safetensors(&[("linear.weight", "F32", weight), ("linear.bias", "F32", bias)], &[])
}

const IRIS_MODEL: [(&str, &str, &[usize]); 2] =
    [("linear.weight", "F32", &[3, 4]), ("linear.bias", "F32", &[3])];
const IRIS_STATS: [(&str, &str); 2] =
    [("standardize_mean", "[0,0,0,0]"), ("standardize_std", "[1,1,1,1]")];

/// A resume checkpoint of `epochs` epochs of `train --dataset iris FLAGS`,
/// made by the library (`train --checkpoint` writes the same bytes).
fn resume_file(epochs: usize, flags: &[&str]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("rules-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("r{}-{epochs}.safetensors", flags.join("_")));
    let epochs = epochs.to_string();
    let mut args = vec!["train", "--dataset", "iris", "--quiet", "--device", "cpu", "--epochs"];
    args.push(&epochs);
    args.extend_from_slice(flags);
    args.extend(["--checkpoint", path.to_str().unwrap()]);
    let out = run_bin(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&path).unwrap()
}

/// `bytes` with `from` (which must be there) replaced by `to`, of the same
/// length (the safetensors header keeps its size).
fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes());
    let at = at.unwrap_or_else(|| panic!("no {from} in the file"));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// `train --dataset iris --resume r.safetensors ARGS` on `bytes`.
fn resume(name: &'static str, bytes: Vec<u8>, args: &[&'static str], code: i32) -> Case {
    let mut c = train(name, &["--dataset", "iris", "--resume", "r.safetensors"], code);
    c.args.extend_from_slice(args);
    with(c, Input::File("r.safetensors", bytes))
}

fn cases() -> Vec<Case> {
    let adam = resume_file(3, &["--optimizer", "adam", "--batch-size", "32"]);
    let stepped = resume_file(3, &["--scheduler", "step", "--step-size", "2"]);
    let fp16 = resume_file(3, &["--amp", "fp16"]);
    let good = safetensors(&IRIS_MODEL, &IRIS_STATS);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 5);
    vec![
        // ---- the seed's flags
        case("batch size 0", &["--batch-size", "0"], 2),
        case("negative batch size", &["--batch-size", "-3"], 2),
        case("0 features", &["--features", "0"], 2),
        case("1 class", &["--classes", "1"], 2),
        case("classes in non-ASCII digits", &["--classes", "\u{663}"], 2),
        case("lr NaN", &["--lr", "nan"], 2),
        case("negative lr", &["--lr", "-0.5"], 2),
        case("lr with an underscore", &["--lr", "1_0"], 2),
        case("lr with no exponent digits", &["--lr", "1e"], 2),
        case("0 steps", &["--steps", "0"], 2),
        case("0 threads", &["--threads", "0"], 2),
        case("threads over i32", &["--threads", "2147483648"], 2),
        case("seed over i64", &["--seed", "9223372036854775808"], 2),
        case("seed with a space", &["--seed", " 3"], 2),
        case("unknown device", &["--device", "tpu"], 2),
        case("space in the cuda index", &["--device", "cuda: 1"], 2),
        case("cuda:99", &["--device", "cuda:99"], 2),
        case("inputs over 2^30 elements", &["--batch-size", "1000000", "--features", "1000000"], 2),
        case("weight just over 2^30 elements", &["--features", "32768", "--classes", "32769"], 2),
        case(
            "sizes overflowing i64",
            &["--batch-size", "9223372036854775807", "--features", "2"],
            2,
        ),
        case("unknown flag", &["--frobnicate"], 2),
        case("abbreviated flag", &["--batch", "4"], 2),
        case("the old --input-size", &["--input-size", "4"], 2),
        case("the old --num-classes", &["--num-classes", "4"], 2),
        case("a flag twice", &["--lr", "0.1", "--lr", "0.2"], 2),
        case("a switch twice", &["--json", "--json"], 2),
        // ---- bench
        case("bench with 1 class", &["bench", "--classes", "1"], 2),
        case("bench with a negative warmup", &["bench", "--warmup", "-1"], 2),
        case("bench with a fractional warmup", &["bench", "--warmup", "1.5"], 2),
        case("bench with the old --input-size", &["bench", "--input-size", "4"], 2),
        // ---- train's flags
        train("an autocast dtype there is not", &["--dataset", "iris", "--amp", "fp32"], 2),
        train(
            "--init-scale with bf16",
            &["--dataset", "iris", "--amp", "bf16", "--init-scale", "4"],
            2,
        ),
        train(
            "--growth-interval without --amp",
            &["--dataset", "iris", "--growth-interval", "4"],
            2,
        ),
        train("--init-scale 0", &["--dataset", "iris", "--amp", "fp16", "--init-scale", "0"], 2),
        train(
            "--init-scale nan",
            &["--dataset", "iris", "--amp", "fp16", "--init-scale", "nan"],
            2,
        ),
        train(
            "--growth-interval 0",
            &["--dataset", "iris", "--amp", "fp16", "--growth-interval", "0"],
            2,
        ),
        train(
            "fp16 with its scaler flags",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "2",
                "--amp",
                "fp16",
                "--init-scale",
                "8",
                "--growth-interval",
                "1",
                "--json",
            ],
            0,
        ),
        train("0 epochs", &["--dataset", "iris", "--epochs", "0"], 2),
        train("mini-batch 0", &["--dataset", "iris", "--batch-size", "0"], 2),
        train("fractional seed", &["--dataset", "iris", "--seed", "1.5"], 2),
        train("test fraction 0", &["--dataset", "iris", "--test-fraction", "0"], 2),
        train("test fraction 1", &["--dataset", "iris", "--test-fraction", "1"], 2),
        train("test fraction NaN", &["--dataset", "iris", "--test-fraction", "NaN"], 2),
        train(
            "test fraction leaving no training row",
            &["--dataset", "iris", "--test-fraction", "0.999"],
            2,
        ),
        train("negative momentum", &["--dataset", "iris", "--momentum", "-1"], 2),
        train("negative dampening", &["--dataset", "iris", "--dampening", "-0.1"], 2),
        train("weight decay NaN", &["--dataset", "iris", "--weight-decay", "nan"], 2),
        train("label smoothing 1.5", &["--dataset", "iris", "--label-smoothing", "1.5"], 2),
        train("too few class weights", &["--dataset", "iris", "--class-weights", "1,2"], 2),
        train("negative class weight", &["--dataset", "iris", "--class-weights", "1,-2,1"], 2),
        train("class weight not a number", &["--dataset", "iris", "--class-weights", "1,x,1"], 2),
        train("empty class weight", &["--dataset", "iris", "--class-weights", "1,2,"], 2),
        train("nesterov without momentum", &["--dataset", "iris", "--nesterov"], 2),
        train(
            "nesterov with dampening",
            &["--dataset", "iris", "--nesterov", "--momentum", "0.9", "--dampening", "0.1"],
            2,
        ),
        train("unknown optimizer", &["--dataset", "iris", "--optimizer", "lbfgs"], 2),
        train("one beta", &["--dataset", "iris", "--optimizer", "adam", "--betas", "0.9"], 2),
        train("beta of 1", &["--dataset", "iris", "--optimizer", "adam", "--betas", "1,0.9"], 2),
        train(
            "three betas",
            &["--dataset", "iris", "--optimizer", "adamw", "--betas", "0.9,0.9,0.9"],
            2,
        ),
        train("negative eps", &["--dataset", "iris", "--optimizer", "adam", "--eps", "-1e-8"], 2),
        train("amsgrad on sgd", &["--dataset", "iris", "--amsgrad"], 2),
        train(
            "betas on rmsprop",
            &["--dataset", "iris", "--optimizer", "rmsprop", "--betas", "0.9,0.99"],
            2,
        ),
        train("nesterov on adam", &["--dataset", "iris", "--optimizer", "adam", "--nesterov"], 2),
        train(
            "momentum on adamw",
            &["--dataset", "iris", "--optimizer", "adamw", "--momentum", "0.9"],
            2,
        ),
        train("alpha on sgd", &["--dataset", "iris", "--alpha", "0.9"], 2),
        train("centered on adam", &["--dataset", "iris", "--optimizer", "adam", "--centered"], 2),
        train(
            "dampening on rmsprop",
            &["--dataset", "iris", "--optimizer", "rmsprop", "--dampening", "0.1"],
            2,
        ),
        train("negative clip norm", &["--dataset", "iris", "--clip-grad-norm", "-1"], 2),
        train("zero clip value", &["--dataset", "iris", "--clip-grad-value", "0"], 2),
        train("clip value inf", &["--dataset", "iris", "--clip-grad-value", "inf"], 2),
        train(
            "norm type 3",
            &["--dataset", "iris", "--clip-grad-norm", "1", "--clip-norm-type", "3"],
            2,
        ),
        train("norm type without clipping", &["--dataset", "iris", "--clip-norm-type", "inf"], 2),
        train("norm type 2 without clipping", &["--dataset", "iris", "--clip-norm-type", "2"], 2),
        // 0 is a value, not "not given" (Python's 0 == False once hid it).
        train(
            "momentum 0 on adam",
            &["--dataset", "iris", "--optimizer", "adam", "--momentum", "0"],
            2,
        ),
        train(
            "patience 0 on step",
            &["--dataset", "iris", "--scheduler", "step", "--step-size", "1", "--patience", "0"],
            2,
        ),
        train("dropout 1", &["--dataset", "iris", "--hidden", "4", "--dropout", "1"], 2),
        train("dropout without hidden layers", &["--dataset", "iris", "--dropout", "0.3"], 2),
        train("hidden size 0", &["--dataset", "iris", "--hidden", "4,0"], 2),
        train("hidden size not a number", &["--dataset", "iris", "--hidden", "4,x"], 2),
        train("unknown scheduler", &["--dataset", "iris", "--scheduler", "cyclic"], 2),
        train("onecycle without max lr", &["--dataset", "iris", "--scheduler", "onecycle"], 2),
        train(
            "onecycle pct start 1",
            &["--dataset", "iris", "--scheduler", "onecycle", "--max-lr", "1", "--pct-start", "1"],
            2,
        ),
        train(
            "onecycle first phase ends at step 0",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "10",
                "--scheduler",
                "onecycle",
                "--max-lr",
                "1",
                "--pct-start",
                "0.1",
            ],
            2,
        ),
        train(
            "onecycle base momentum 1",
            &[
                "--dataset",
                "iris",
                "--scheduler",
                "onecycle",
                "--max-lr",
                "1",
                "--base-momentum",
                "1",
            ],
            2,
        ),
        train(
            "onecycle bad anneal strategy",
            &[
                "--dataset",
                "iris",
                "--scheduler",
                "onecycle",
                "--max-lr",
                "1",
                "--anneal-strategy",
                "exp",
            ],
            2,
        ),
        train(
            "max lr on cosine",
            &["--dataset", "iris", "--scheduler", "cosine", "--t-max", "3", "--max-lr", "1"],
            2,
        ),
        train(
            "warmup-cosine without warmup",
            &["--dataset", "iris", "--scheduler", "warmup-cosine"],
            2,
        ),
        train(
            "warmup longer than the run",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "5",
                "--scheduler",
                "warmup-cosine",
                "--warmup-epochs",
                "5",
            ],
            2,
        ),
        train(
            "warmup start factor 0",
            &[
                "--dataset",
                "iris",
                "--scheduler",
                "warmup-cosine",
                "--warmup-epochs",
                "2",
                "--start-factor",
                "0",
            ],
            2,
        ),
        train(
            "plateau factor 1",
            &["--dataset", "iris", "--scheduler", "plateau", "--factor", "1"],
            2,
        ),
        train(
            "plateau negative patience",
            &["--dataset", "iris", "--scheduler", "plateau", "--patience", "-1"],
            2,
        ),
        train(
            "plateau mode median",
            &["--dataset", "iris", "--scheduler", "plateau", "--mode", "median"],
            2,
        ),
        train("patience without scheduler", &["--dataset", "iris", "--patience", "3"], 2),
        train(
            "cycle momentum flag on plateau",
            &["--dataset", "iris", "--scheduler", "plateau", "--no-cycle-momentum"],
            2,
        ),
        train("step without step size", &["--dataset", "iris", "--scheduler", "step"], 2),
        train("exponential without gamma", &["--dataset", "iris", "--scheduler", "exponential"], 2),
        train(
            "milestones out of order",
            &["--dataset", "iris", "--scheduler", "multistep", "--milestones", "10,5"],
            2,
        ),
        train(
            "negative gamma",
            &["--dataset", "iris", "--scheduler", "step", "--step-size", "2", "--gamma", "-0.5"],
            2,
        ),
        train("t-max 0", &["--dataset", "iris", "--scheduler", "cosine", "--t-max", "0"], 2),
        train(
            "start factor 1.5",
            &["--dataset", "iris", "--scheduler", "linear", "--start-factor", "1.5"],
            2,
        ),
        train("gamma without scheduler", &["--dataset", "iris", "--gamma", "0.5"], 2),
        train(
            "t-max on step",
            &["--dataset", "iris", "--scheduler", "step", "--step-size", "2", "--t-max", "5"],
            2,
        ),
        train("no data", &[], 2),
        train("two data sources", &["--dataset", "iris", "--data", "x.csv"], 2),
        train("unknown dataset", &["--dataset", "mnist"], 2),
        train("data set name in capitals", &["--dataset", "IRIS"], 2),
        train("abbreviated train flag", &["--dataset", "iris", "--epoch", "5"], 2),
        train("empty --save path", &["--dataset", "iris", "--save", ""], 2),
        // ---- CSV files
        train("missing data file", &["--data", "missing.csv"], 2),
        with(train("data is a directory", &["--data", "adir"], 2), Input::Dir("adir")),
        csv("empty file", b"", 2, &[]),
        csv("header only", b"a,b,label\n", 2, &[]),
        csv("blank lines only", b"\n \r\n\t\n", 2, &[]),
        csv("ragged rows", b"1,2,0\n3,4,1\n5,6\n", 2, &[]),
        csv("one column", b"1\n0\n", 2, &[]),
        csv("non-numeric cell", b"1,2,0\n3,abc,1\n", 2, &[]),
        csv("NaN cell", b"1,2,0\nNaN,4,1\n", 2, &[]),
        csv("infinite cell", b"1,2,0\n3,-inf,1\n", 2, &[]),
        csv("underscore in a cell", b"a,b,label\n1_0,2,0\n3,4,1\n", 2, &[]),
        csv("control character by a number", b"a,b,label\n1\x1c,2,0\n3,4,1\n", 2, &[]),
        csv("negative label", b"1,2,0\n3,4,-1\n", 2, &[]),
        csv("fractional label", b"1,2,0\n3,4,1.5\n", 2, &[]),
        csv("label not a number", b"1,2,0\n3,4,cat\n", 2, &[]),
        csv("label with an underscore", b"1,2,0\n3,4,1_0\n", 2, &[]),
        csv("label over 1000000", b"1,2,0\n3,4,1000001\n", 2, &[]),
        csv("label 1e15", b"1,2,0\n3,4,1e15\n", 2, &[]),
        csv("label over i64", b"1,2,0\n3,4,9223372036854775808\n", 2, &[]),
        csv("one class", b"1,2,0\n3,4,0\n5,6,0\n", 2, &[]),
        csv("an empty cell makes line 1 a header, leaving one class", b"1,,0\n3,4,1\n", 2, &[]),
        csv("too few rows for the split", b"1,2,0\n3,4,1\n", 2, &["--test-fraction", "0.9"]),
        csv("not UTF-8", b"1,2,0\n3,\xff,1\n", 2, &[]),
        csv("not UTF-8 in the header", b"a,\xff,label\n1,2,0\n3,4,1\n", 2, &[]),
        // ---- resume checkpoints
        resume("resume with another optimizer", adam.clone(), &["--epochs", "6"], 2),
        resume(
            "resume where the run already is",
            adam.clone(),
            &["--optimizer", "adam", "--batch-size", "32", "--epochs", "3"],
            2,
        ),
        resume("resume without the scheduler", stepped.clone(), &["--epochs", "6"], 2),
        resume(
            "resume with another scheduler",
            stepped.clone(),
            &["--epochs", "6", "--scheduler", "exponential", "--gamma", "0.5"],
            2,
        ),
        resume("resume an fp16 run without --amp", fp16.clone(), &["--epochs", "6"], 2),
        resume(
            "resume an f32 run with --amp fp16",
            adam.clone(),
            &["--epochs", "6", "--optimizer", "adam", "--batch-size", "32", "--amp", "fp16"],
            2,
        ),
        resume(
            "resume an fp16 run with bf16",
            fp16.clone(),
            &["--epochs", "6", "--amp", "bf16"],
            2,
        ),
        resume(
            "resume an fp16 run",
            fp16.clone(),
            &["--epochs", "6", "--amp", "fp16", "--json"],
            0,
        ),
        resume(
            "a negative GradScaler scale",
            edit(&fp16, r#"\"scale\":65536.0"#, r#"\"scale\":-6553.6"#),
            &["--epochs", "6", "--amp", "fp16"],
            2,
        ),
        resume(
            "a GradScaler growth interval of -200",
            edit(&fp16, r#"\"growth_interval\":2000"#, r#"\"growth_interval\":-200"#),
            &["--epochs", "6", "--amp", "fp16"],
            2,
        ),
        resume("resume a model checkpoint", good.clone(), &["--epochs", "6"], 2),
        resume("resume a junk file", b"not a checkpoint".to_vec(), &["--epochs", "6"], 2),
        resume(
            "resume with another hidden size",
            resume_file(2, &["--hidden", "4"]),
            &["--epochs", "6", "--hidden", "5"],
            2,
        ),
        resume(
            "resume on other data",
            adam.clone(),
            &["--optimizer", "adam", "--epochs", "6", "--test-fraction", "0.5", "--json"],
            0,
        ),
        with(
            train(
                "resume on another data set",
                &["--dataset", "wine", "--resume", "r.safetensors", "--epochs", "6"],
                2,
            ),
            Input::File("r.safetensors", adam.clone()),
        ),
        with(
            train(
                "resume and load",
                &["--dataset", "iris", "--resume", "r.safetensors", "--load", "r.safetensors"],
                2,
            ),
            Input::File("r.safetensors", adam.clone()),
        ),
        train(
            "checkpoint-every without checkpoint",
            &["--dataset", "iris", "--checkpoint-every", "2"],
            2,
        ),
        train(
            "checkpoint-every 0",
            &["--dataset", "iris", "--checkpoint", "c.safetensors", "--checkpoint-every", "0"],
            2,
        ),
        resume(
            "resume the adam run",
            adam.clone(),
            &["--optimizer", "adam", "--batch-size", "32", "--epochs", "5", "--json"],
            0,
        ),
        resume(
            "resume the scheduled run",
            stepped.clone(),
            &["--scheduler", "step", "--step-size", "2", "--epochs", "5", "--json"],
            0,
        ),
        // ---- checkpoints
        case("no --load", &["eval", "--dataset", "iris", "--device", "cpu"], 2),
        case(
            "missing checkpoint",
            &["eval", "--dataset", "iris", "--device", "cpu", "--load", "nope.safetensors"],
            2,
        ),
        checkpoint("junk checkpoint", b"this is not a checkpoint at all".to_vec(), 2, &[]),
        checkpoint("truncated checkpoint", truncated, 2, &[]),
        checkpoint("a torch.save zip", b"PK\x03\x04 not safetensors".to_vec(), 2, &[]),
        checkpoint(
            "wrong tensor names",
            safetensors(&[("fc.weight", "F32", &[3, 4]), ("fc.bias", "F32", &[3])], &IRIS_STATS),
            2,
            &[],
        ),
        checkpoint(
            "f64 tensors",
            safetensors(
                &[("linear.weight", "F64", &[3, 4]), ("linear.bias", "F64", &[3])],
                &IRIS_STATS,
            ),
            2,
            &[],
        ),
        checkpoint("inconsistent shapes", model(&[3, 4], &[5]), 2, &["--no-standardize"]),
        checkpoint("1-D weight", model(&[12], &[12]), 2, &["--no-standardize"]),
        checkpoint("features do not fit", model(&[3, 13], &[3]), 2, &["--no-standardize"]),
        checkpoint("fewer classes than labels", model(&[2, 4], &[2]), 2, &["--no-standardize"]),
        checkpoint("no statistics to standardize with", model(&[3, 4], &[3]), 2, &[]),
        checkpoint(
            "statistics of the wrong length",
            safetensors(
                &IRIS_MODEL,
                &[("standardize_mean", "[0,0]"), ("standardize_std", "[1,1]")],
            ),
            2,
            &[],
        ),
        checkpoint(
            "NaN in the statistics",
            safetensors(
                &IRIS_MODEL,
                &[("standardize_mean", "[NaN,0,0,0]"), ("standardize_std", "[1,1,1,1]")],
            ),
            2,
            &[],
        ),
        with(
            train(
                "class weights against the checkpoint's classes",
                &["--dataset", "iris", "--load", "m.safetensors", "--class-weights", "1,1,1,1"],
                2,
            ),
            Input::File("m.safetensors", good.clone()),
        ),
        // ---- failures while running
        train("diverging training", &["--dataset", "iris", "--lr", "1e38"], 1),
        train(
            "save in a missing directory",
            &["--dataset", "iris", "--epochs", "1", "--save", "no/such/m.safetensors"],
            1,
        ),
        // ---- good inputs, accepted by both
        case(
            "seed command with trimmed and signed values",
            &[
                words("--json --steps +2 --features 4 --classes 2 --seed -5 --threads 1"),
                vec!["--device", " CPU ", "--lr", " 0.1 "],
            ]
            .concat(),
            0,
        ),
        case(
            "bench",
            &words("bench --json --device cpu --steps 5 --warmup +1 --features 3 --classes 2"),
            0,
        ),
        train("iris", &["--dataset", "iris", "--epochs", "1", "--json"], 0),
        train(
            "every adamw argument",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "2",
                "--optimizer",
                "adamw",
                "--lr",
                "0.01",
                "--betas",
                "0.8,0.99",
                "--eps",
                "1e-6",
                "--weight-decay",
                "0",
                "--amsgrad",
                "--json",
            ],
            0,
        ),
        train(
            "every onecycle argument",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "3",
                "--batch-size",
                "40",
                "--scheduler",
                "onecycle",
                "--max-lr",
                "0.2",
                "--pct-start",
                "0.4",
                "--anneal-strategy",
                "linear",
                "--no-cycle-momentum",
                "--base-momentum",
                "0.8",
                "--max-momentum",
                "0.9",
                "--div-factor",
                "10",
                "--final-div-factor",
                "100",
                "--three-phase",
                "--json",
            ],
            0,
        ),
        train(
            "every plateau argument",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "3",
                "--scheduler",
                "plateau",
                "--mode",
                "max",
                "--factor",
                "0.5",
                "--patience",
                "0",
                "--threshold",
                "0.1",
                "--threshold-mode",
                "abs",
                "--cooldown",
                "1",
                "--min-lr",
                "0.01",
                "--json",
            ],
            0,
        ),
        train(
            "every warmup-cosine argument",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "4",
                "--scheduler",
                "warmup-cosine",
                "--warmup-epochs",
                "2",
                "--start-factor",
                "0.2",
                "--t-max",
                "5",
                "--eta-min",
                "0.001",
                "--json",
            ],
            0,
        ),
        train(
            "every scheduler argument",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "3",
                "--scheduler",
                "linear",
                "--start-factor",
                "0.5",
                "--end-factor",
                "0.8",
                "--total-iters",
                "2",
                "--json",
            ],
            0,
        ),
        train(
            "clipping",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "2",
                "--clip-grad-norm",
                "0.5",
                "--clip-norm-type",
                "inf",
                "--clip-grad-value",
                "0.1",
                "--json",
            ],
            0,
        ),
        train(
            "every rmsprop argument",
            &[
                "--dataset",
                "iris",
                "--epochs",
                "2",
                "--optimizer",
                "rmsprop",
                "--alpha",
                "0.9",
                "--eps",
                "1e-6",
                "--momentum",
                "0.5",
                "--centered",
                "--weight-decay",
                "0.01",
                "--json",
            ],
            0,
        ),
        train(
            "every train flag, class weights in two parts",
            &words(
                "--dataset wine --epochs 2 --json --batch-size 32 --momentum 0.5 --nesterov \
                 --weight-decay 1e-3 --label-smoothing 1 --class-weights 1,2 \
                 --class-weights 0.5 --test-fraction 0.99 --seed -1 --threads 1",
            ),
            0,
        ),
        csv(
            "CSV with a header, CRLF, a blank line, labels 2.0, +1 and 1e0",
            b"f1,f2,label\r\n1,2,0\r\n\r\n3, .5 ,+1\r\n5,1.,2.0\r\n+7,-8e-1,1e0\r\n9,1E2,0\r\n",
            0,
            &["--json"],
        ),
        csv(
            "a byte order mark makes line 1 a header",
            "\u{feff}1,2,0\n3,4,1\n5,6,0\n".as_bytes(),
            0,
            &["--json"],
        ),
        csv(
            "no-break spaces around a cell, label -0",
            "1,\u{a0}2\u{a0},0\n3,4,1\n5,6,-0\n".as_bytes(),
            0,
            &["--json"],
        ),
        checkpoint("checkpoint with statistics", good.clone(), 0, &["--json"]),
        checkpoint(
            "other tensors are ignored",
            safetensors(
                &[
                    ("linear.weight", "F32", &[3, 4]),
                    ("linear.bias", "F32", &[3]),
                    ("extra", "F64", &[2]),
                ],
                &[],
            ),
            0,
            &["--no-standardize", "--json"],
        ),
        checkpoint(
            "more classes than labels",
            model(&[5, 4], &[5]),
            0,
            &["--no-standardize", "--json"],
        ),
        with(
            train(
                "continue from a checkpoint",
                &words("--dataset iris --epochs 1 --json --batch-size 50 --load m.safetensors"),
                0,
            ),
            Input::File("m.safetensors", good),
        ),
    ]
}

/// What one program did on one case.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// What is wrong with one program's run, if anything.
fn check(out: &Run, code: i32) -> Option<String> {
    let mut wrong = Vec::new();
    if out.code != Some(code) {
        wrong.push(format!("exit {:?}, expected {code}", out.code));
    }
    if code == 0 {
        if out.stdout.is_empty() {
            wrong.push("nothing on stdout".to_string());
        }
    } else {
        if !out.stdout.is_empty() {
            wrong.push(format!("stdout: {}", out.stdout.trim_end()));
        }
        let lines: Vec<&str> = out.stderr.lines().collect();
        if lines.len() != 1 || lines[0].trim().is_empty() {
            wrong.push(format!("{} lines on stderr, expected one", lines.len()));
        }
    }
    if wrong.is_empty() {
        None
    } else {
        Some(format!("{}\n      stderr: {}", wrong.join("; "), out.stderr.trim_end()))
    }
}

/// The fresh directory of case `i`, with the case's inputs written into it.
fn case_dir(i: usize, c: &Case) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("reference_rules").join(format!("case{i:03}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for input in &c.inputs {
        match input {
            Input::File(name, bytes) => std::fs::write(dir.join(name), bytes).unwrap(),
            Input::Dir(name) => std::fs::create_dir_all(dir.join(name)).unwrap(),
        }
    }
    dir
}

/// Runs the binary on one case, in the case's directory.
fn run_binary(c: &Case, dir: &Path) -> Run {
    let out = bin()
        .args(&c.args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running the cross-entropy-tch binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run_reference_on_all(python: &Path, cases: &[(&Case, PathBuf)]) -> Vec<Run> {
    let batch: Vec<(PathBuf, Vec<&str>)> =
        cases.iter().map(|(c, dir)| (dir.clone(), c.args.clone())).collect();
    run_reference_batch(python, &batch)
        .into_iter()
        .map(|out| Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
        .collect()
}

#[test]
fn the_binary_and_the_reference_refuse_the_same_inputs() {
    let Some(python) = reference_python() else { return };
    let cases = cases();
    let refused = cases.iter().filter(|c| c.code == 2).count();
    let accepted = cases.iter().filter(|c| c.code == 0).count();
    assert!(refused >= 30 && accepted >= 5, "{refused} bad inputs, {accepted} good ones");

    // The binary, each case in a fresh directory, two at a time.
    let dirs: Vec<(&Case, PathBuf)> =
        cases.iter().enumerate().map(|(i, c)| (c, case_dir(i, c))).collect();
    let next = AtomicUsize::new(0);
    let rust_runs = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((c, dir)) = dirs.get(i) else { break };
                let run = run_binary(c, dir);
                rust_runs.lock().unwrap().push((i, run));
            });
        }
    });
    let mut rust_runs = rust_runs.into_inner().unwrap();
    rust_runs.sort_by_key(|(i, _)| *i);
    // The reference, in fresh directories again (a run may write files).
    let dirs: Vec<(&Case, PathBuf)> =
        cases.iter().enumerate().map(|(i, c)| (c, case_dir(i, c))).collect();
    let torch_runs = run_reference_on_all(&python, &dirs);

    let mut failures = Vec::new();
    for (((i, rust), torch), c) in rust_runs.iter().zip(&torch_runs).zip(&cases) {
        let problems: Vec<String> = [("cross-entropy-tch", rust), ("reference.py", torch)]
            .iter()
            .filter_map(|(who, out)| check(out, c.code).map(|why| format!("    {who}: {why}")))
            .collect();
        if !problems.is_empty() {
            failures.push(format!("{i}: {} {:?}:\n{}", c.name, c.args, problems.join("\n")));
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
    let _ = writeln!(
        std::io::stderr(),
        "checked {} cases against scripts/reference.py: {refused} refused (status 2), {} failing \
         at run time (status 1), {accepted} accepted",
        cases.len(),
        cases.len() - refused - accepted
    );
}
