//! `CrossEntropyLoss` against real PyTorch: `scripts/loss_cases.py` draws
//! random cases over the whole option grid (and the edge cases) and computes
//! them with `F.cross_entropy`; here each is recomputed and compared, loss
//! and gradient. Both sides call the same ATen op with the same f32 inputs,
//! so the comparison is bit for bit (a NaN matches a NaN).
//!
//! Without PyTorch this skips with a printed reason, except under CI.

mod common;

use common::*;
use cross_entropy_tch::{CrossEntropyLoss, Reduction};
use serde_json::Value;
use tch::{Kind, Tensor};

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| if x.is_null() { f32::NAN } else { x.to_string().parse().unwrap() })
        .collect()
}

fn dims(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect()
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn run_case(case: &Value) -> Result<(), String> {
    let shape = dims(&case["shape"]);
    let input =
        Tensor::from_slice(&f32s(&case["input"])).view(shape.as_slice()).set_requires_grad(true);
    let tshape = dims(&case["target_shape"]);
    let target = if case["target_kind"] == "prob" {
        Tensor::from_slice(&f32s(&case["target"])).view(tshape.as_slice())
    } else {
        let t: Vec<i64> =
            case["target"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        Tensor::from_slice(&t).view(tshape.as_slice())
    };
    let mut loss_fn = CrossEntropyLoss::new()
        .ignore_index(case["ignore_index"].as_i64().unwrap())
        .label_smoothing(case["label_smoothing"].as_f64().unwrap())
        .reduction(match case["reduction"].as_str().unwrap() {
            "none" => Reduction::None,
            "sum" => Reduction::Sum,
            _ => Reduction::Mean,
        });
    if !case["weight"].is_null() {
        loss_fn = loss_fn.weight(Tensor::from_slice(&f32s(&case["weight"])));
    }
    let loss = loss_fn.f_forward(&input, &target).map_err(|e| e.to_string())?;
    if loss.size() != dims(&case["loss_shape"]) {
        return Err(format!("loss shape {:?}", loss.size()));
    }
    let ours = Vec::<f32>::try_from(&loss.detach().flatten(0, -1)).unwrap();
    for (i, (a, b)) in ours.iter().zip(f32s(&case["loss"])).enumerate() {
        if !same_bits(*a, b) {
            return Err(format!("loss[{i}]: ours {a:e}, PyTorch {b:e}"));
        }
    }
    if !case["grad"].is_null() {
        loss.sum(Kind::Float).backward();
        let grad = Vec::<f32>::try_from(&input.grad().flatten(0, -1)).unwrap();
        for (i, (a, b)) in grad.iter().zip(f32s(&case["grad"])).enumerate() {
            if !same_bits(*a, b) {
                return Err(format!("grad[{i}]: ours {a:e}, PyTorch {b:e}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_case_matches_pytorch_bit_for_bit() {
    let Some(python) = reference_python() else { return };
    for seed in ["0", "1"] {
        let out = std::process::Command::new(&python)
            .arg(root().join("scripts/loss_cases.py"))
            .args(["--seed", seed])
            .output()
            .expect("running scripts/loss_cases.py");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cases: Vec<Value> = serde_json::from_slice(&out.stdout).expect("cases JSON");
        assert!(cases.len() > 250, "only {} cases", cases.len());
        // The comparison catches one ulp in a loss and in a gradient.
        for key in ["loss", "grad"] {
            let mut nudged = cases[40].clone();
            let v: f32 = nudged[key][0].to_string().parse().unwrap();
            nudged[key][0] =
                serde_json::from_str(&f32::from_bits(v.to_bits() + 1).to_string()).unwrap();
            assert!(run_case(&nudged).is_err(), "one ulp in {key} went unnoticed");
        }
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|c| run_case(c).err().map(|e| format!("{}: {e}", c["name"])))
            .collect();
        assert!(
            failures.is_empty(),
            "seed {seed}: {} of {} cases differ from PyTorch:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}
