//! The loss, its gradient and the SGD step against values computed here, in
//! f64, from the formulas: never libtorch against itself.
//!
//! Tolerances: libtorch computes in f32, the oracle in f64 from the same f32
//! inputs. A handful of f32 operations (max, subtract, exp, sum, log) each
//! round by at most half an ulp (6e-8 relative), so the loss is asserted to
//! 1e-6 relative to max(loss, 1): the floor of 1 because libtorch takes
//! `log` (not `log1p`) of a sum that is at least 1, so a tiny loss carries
//! an absolute error of about an ulp of 1. Gradient entries, which lie in
//! [-1/N, 1/N], are asserted to 1e-6 relative to 1/N.

mod common;

use common::*;
use cross_entropy_tch::example::{run_example, ExampleConfig};
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::MyModel;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Tensor};

const LOSS_REL: f64 = 1e-6;

fn targets_tensor(targets: &[usize]) -> Tensor {
    Tensor::from_slice(&targets.iter().map(|&t| t as i64).collect::<Vec<_>>())
}

fn loss_of(rows: &[Vec<f32>], targets: &[usize]) -> f64 {
    cross_entropy(&matrix_tensor(rows), &targets_tensor(targets)).double_value(&[])
}

fn matrix_of(t: &Tensor) -> Vec<Vec<f64>> {
    to_f64(&Vec::<Vec<f32>>::try_from(t).unwrap())
}

#[test]
fn uniform_logits_give_ln_c() {
    let mut rng = Rng(1);
    for c in [2usize, 3, 10, 1000] {
        for level in [0.0f32, -7.25, 1e4, 3e38] {
            let rows: Vec<Vec<f32>> = (0..5).map(|_| vec![level; c]).collect();
            let targets: Vec<usize> = (0..5).map(|_| rng.below(c)).collect();
            let loss = loss_of(&rows, &targets);
            assert_close(loss, (c as f64).ln(), LOSS_REL, 0.0, &format!("C={c}, logits={level}"));
        }
    }
}

#[test]
fn two_class_loss_is_softplus_of_the_margin() {
    let mut rng = Rng(2);
    let rows = rng.matrix(64, 2, -20.0, 20.0);
    let targets: Vec<usize> = (0..64).map(|_| rng.below(2)).collect();
    let expected: f64 = rows
        .iter()
        .zip(&targets)
        .map(|(r, &t)| softplus(r[1 - t] as f64 - r[t] as f64))
        .sum::<f64>()
        / 64.0;
    assert_close(
        loss_of(&rows, &targets),
        expected,
        LOSS_REL,
        0.0,
        "mean softplus(z_other - z_true)",
    );
    for (row, &t) in rows.iter().zip(&targets) {
        let one = loss_of(std::slice::from_ref(row), &[t]);
        let margin = row[1 - t] as f64 - row[t] as f64;
        assert_close(one, softplus(margin), LOSS_REL, 1.0, &format!("row {row:?} target {t}"));
    }
}

#[test]
fn hand_worked_three_class_example() {
    // logits (1, 2, 3): softmax = e^k / (e + e^2 + e^3).
    // Target 2: -log(e^3 / (e + e^2 + e^3)) = log(1 + e^-1 + e^-2) = 0.40760596...
    // Target 0: -log(e / (e + e^2 + e^3))   = log(1 + e + e^2)      = 2.40760596...
    // Mean of the two rows: 1.40760596...
    let e = std::f64::consts::E;
    let by_hand_t2 = (1.0 + 1.0 / e + 1.0 / (e * e)).ln();
    let by_hand_t0 = (1.0 + e + e * e).ln();
    assert!((by_hand_t2 - 0.407_605_964_3).abs() < 1e-9);
    assert!((by_hand_t0 - by_hand_t2 - 2.0).abs() < 1e-12);
    let row = vec![1.0f32, 2.0, 3.0];
    assert_close(loss_of(std::slice::from_ref(&row), &[2]), by_hand_t2, LOSS_REL, 0.0, "target 2");
    assert_close(loss_of(std::slice::from_ref(&row), &[0]), by_hand_t0, LOSS_REL, 0.0, "target 0");
    let mean = loss_of(&[row.clone(), row], &[0, 2]);
    assert_close(mean, (by_hand_t0 + by_hand_t2) / 2.0, LOSS_REL, 0.0, "mean of both");
}

#[test]
fn extreme_logits_give_the_finite_analytic_value() {
    let cases: Vec<(Vec<f32>, usize, f64)> = vec![
        // the target 2e4 below the max: loss = 2e4 + log(1 + e^-1e4 + e^-2e4) = 2e4
        (vec![1e4, -1e4, 0.0], 1, 2e4),
        (vec![1e4, -1e4, 0.0], 0, 0.0),
        (vec![-1e4, -1e4, -1e4], 1, 3f64.ln()),
        // near f32's overflow (3.4e38): no exp of a huge number, no inf - inf
        (vec![3.0e38, 2.9e38, 0.0], 1, 3.0e38f32 as f64 - 2.9e38f32 as f64),
        (vec![3.0e38, 2.9e38, 0.0], 0, 0.0),
        (vec![-3.0e38, 3.0e38], 1, 0.0),
        (vec![3.0e38, 3.0e38, -3.0e38], 2, 3.0e38f32 as f64 * 2.0), // over f32::MAX: checked below
    ];
    for (row, t, by_hand) in cases {
        let loss = loss_of(std::slice::from_ref(&row), &[t]);
        let oracle = nll_of_row(&row.iter().map(|&v| v as f64).collect::<Vec<_>>(), t);
        if by_hand > f32::MAX as f64 {
            // The true loss exceeds f32's range: PyTorch gives inf, and so do we.
            assert!(loss.is_infinite() && loss > 0.0, "{row:?}, target {t}: got {loss}");
            continue;
        }
        assert!(loss.is_finite(), "{row:?}, target {t}: loss {loss} is not finite");
        assert_close(oracle, by_hand, 1e-12, 1e-300, "oracle against the hand value");
        assert_close(loss, by_hand, LOSS_REL, 1.0, &format!("{row:?}, target {t}"));
    }
    // Random logits at scale 1e4: the oracle and libtorch still agree.
    let mut rng = Rng(3);
    let rows = rng.matrix(32, 7, -1e4, 1e4);
    let targets: Vec<usize> = (0..32).map(|_| rng.below(7)).collect();
    let oracle = cross_entropy_mean(&to_f64(&rows), &targets);
    assert_close(loss_of(&rows, &targets), oracle, LOSS_REL, 0.0, "scale 1e4");
}

#[test]
fn gradient_is_softmax_minus_onehot_over_n() {
    let mut rng = Rng(4);
    for (n, c, scale) in [(1usize, 2usize, 3.0), (10, 3, 3.0), (17, 10, 30.0), (64, 5, 1e3)] {
        let rows = rng.matrix(n, c, -scale, scale);
        let targets: Vec<usize> = (0..n).map(|_| rng.below(c)).collect();
        let logits = matrix_tensor(&rows).set_requires_grad(true);
        cross_entropy(&logits, &targets_tensor(&targets)).backward();
        let got = matrix_of(&logits.grad());
        let expected = cross_entropy_grad(&to_f64(&rows), &targets);
        for (i, (g_row, e_row)) in got.iter().zip(&expected).enumerate() {
            for (j, (g, e)) in g_row.iter().zip(e_row).enumerate() {
                let what = format!("N={n} C={c}: dL/dlogits[{i}][{j}]");
                assert_close(*g, *e, 1e-6, 1.0 / n as f64, &what);
            }
        }
    }
}

/// One SGD step on a 2-sample, 2-feature, 2-class problem, derived by hand.
#[test]
fn one_sgd_step_by_hand() {
    let _rng = rng_lock();
    // W = 0 and b = 0, so every row's softmax is (1/2, 1/2).
    // x1 = (1, 2) with class 0, x2 = (3, -1) with class 1; N = 2.
    //   dL/db = ((1/2 - 1) + (1/2 - 0)) / 2, ... = (0, 0)
    //   dL/dW[0] = ((1/2 - 1) x1 + (1/2) x2) / 2 = ((-1/2, -1) + (3/2, -1/2)) / 2 = (1/2, -3/4)
    //   dL/dW[1] = -dL/dW[0] = (-1/2, 3/4)
    //   loss = ln 2
    // With lr = 0.5: W' = W - lr dL/dW = ((-1/4, 3/8), (1/4, -3/8)), b' = (0, 0).
    let vs = nn::VarStore::new(Device::Cpu);
    let model = MyModel::new(&vs.root(), 2, 2);
    tch::no_grad(|| {
        let _ = model.weight().shallow_clone().zero_();
        let _ = model.bias().shallow_clone().zero_();
    });
    let mut sgd = nn::Sgd::default().build(&vs, 0.5).unwrap();
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -1.0]).view([2, 2]);
    let y = Tensor::from_slice(&[0i64, 1]);
    let loss = cross_entropy(&model.forward(&x), &y);
    assert_close(loss.double_value(&[]), 2f64.ln(), LOSS_REL, 0.0, "loss = ln 2");
    sgd.zero_grad();
    loss.backward();
    let grad = matrix_of(&model.weight().grad());
    let by_hand_grad = [[0.5, -0.75], [-0.5, 0.75]];
    let by_hand_w = [[-0.25, 0.375], [0.25, -0.375]];
    sgd.step();
    let w = matrix_of(model.weight());
    let b = Vec::<f32>::try_from(model.bias()).unwrap();
    for i in 0..2 {
        for j in 0..2 {
            // softmax(0, 0) in f32 is 1/2 within an ulp, hence 1e-6 and not ==.
            assert_close(grad[i][j], by_hand_grad[i][j], 1e-6, 1.0, "dL/dW");
            assert_close(w[i][j], by_hand_w[i][j], 1e-6, 1.0, "W after the step");
        }
        assert!(b[i].abs() < 1e-7, "b after the step: {b:?}");
    }
}

/// From arbitrary known weights, the updated weights are W - lr * dL/dW with
/// dL/dW = (softmax - onehot)^T X / N derived here in f64.
#[test]
fn sgd_step_from_known_weights_matches_the_derivation() {
    let _rng = rng_lock();
    let mut rng = Rng(5);
    let (n, d, c, lr) = (6usize, 4usize, 3usize, 0.1f64);
    let w0 = rng.matrix(c, d, -1.0, 1.0);
    let b0: Vec<f32> = (0..c).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let x = rng.matrix(n, d, -2.0, 2.0);
    let targets: Vec<usize> = (0..n).map(|_| rng.below(c)).collect();

    let vs = nn::VarStore::new(Device::Cpu);
    let model = MyModel::new(&vs.root(), d as i64, c as i64);
    tch::no_grad(|| {
        model.weight().shallow_clone().copy_(&matrix_tensor(&w0));
        model.bias().shallow_clone().copy_(&Tensor::from_slice(&b0));
    });
    let mut sgd = nn::Sgd::default().build(&vs, lr).unwrap();
    let loss = cross_entropy(&model.forward(&matrix_tensor(&x)), &targets_tensor(&targets));
    sgd.zero_grad();
    loss.backward();
    sgd.step();

    // The same step in f64, by hand.
    let (xf, wf) = (to_f64(&x), to_f64(&w0));
    let logits: Vec<Vec<f64>> = xf
        .iter()
        .map(|xi| {
            (0..c).map(|k| b0[k] as f64 + (0..d).map(|j| wf[k][j] * xi[j]).sum::<f64>()).collect()
        })
        .collect();
    assert_close(
        loss.double_value(&[]),
        cross_entropy_mean(&logits, &targets),
        LOSS_REL,
        0.0,
        "loss",
    );
    let g = cross_entropy_grad(&logits, &targets);
    let w1 = matrix_of(model.weight());
    let b1 = Vec::<f32>::try_from(model.bias()).unwrap();
    for k in 0..c {
        for j in 0..d {
            let dw: f64 = (0..n).map(|i| g[i][k] * xf[i][j]).sum();
            assert_close(w1[k][j], wf[k][j] - lr * dw, 1e-6, 1.0, &format!("W'[{k}][{j}]"));
        }
        let db: f64 = (0..n).map(|i| g[i][k]).sum();
        assert_close(b1[k] as f64, b0[k] as f64 - lr * db, 1e-6, 1.0, &format!("b'[{k}]"));
    }
}

/// The example's own run: its printed loss and its gradients are the oracle's,
/// applied to its own logits, inputs and targets.
#[test]
fn seed_flow_matches_the_oracle() {
    let _rng = rng_lock();
    for config in [
        ExampleConfig::default(),
        ExampleConfig {
            seed: 7,
            batch_size: 33,
            features: 5,
            classes: 8,
            ..ExampleConfig::default()
        },
    ] {
        let run = run_example(&config, Device::Cpu, |_, _| {}).unwrap();
        let outputs = matrix_of(&run.outputs);
        let targets: Vec<usize> =
            Vec::<i64>::try_from(&run.targets).unwrap().iter().map(|&t| t as usize).collect();
        assert!(targets.iter().all(|&t| t < config.classes as usize));
        let oracle = cross_entropy_mean(&outputs, &targets);
        assert_close(run.losses[0] as f64, oracle, LOSS_REL, 0.0, "the example's loss");

        // The logits themselves are X W^T + b.
        let (x, w) = (matrix_of(&run.inputs), matrix_of(&run.initial.weight));
        let b = Vec::<f32>::try_from(&run.initial.bias).unwrap();
        for (i, row) in outputs.iter().enumerate() {
            for (k, &v) in row.iter().enumerate() {
                let by_hand: f64 =
                    b[k] as f64 + x[i].iter().zip(&w[k]).map(|(a, b)| a * b).sum::<f64>();
                assert_close(v, by_hand, 1e-6, 1.0, &format!("outputs[{i}][{k}]"));
            }
        }
        // dL/dW = G^T X, dL/db = sum_i G_i, with G = (softmax - onehot) / N.
        let g = cross_entropy_grad(&outputs, &targets);
        let gw = matrix_of(&run.grad.weight);
        for (k, gw_row) in gw.iter().enumerate() {
            for (j, &v) in gw_row.iter().enumerate() {
                let by_hand: f64 = g.iter().zip(&x).map(|(gi, xi)| gi[k] * xi[j]).sum();
                assert_close(v, by_hand, 1e-6, 1.0, &format!("grad.weight[{k}][{j}]"));
            }
        }
        // The initial parameters lie in PyTorch's nn.Linear bounds.
        let bound = 1.0 / (config.features as f64).sqrt();
        assert!(w.iter().flatten().all(|v| v.abs() <= bound));
        assert!(b.iter().all(|&v| (v as f64).abs() <= bound));
    }
}

#[test]
fn kaiming_bound_is_one_over_sqrt_fan_in() {
    for fan_in in [1i64, 2, 3, 10, 784, 4096] {
        let bound = cross_entropy_tch::init::kaiming_uniform_bound(fan_in, 5f64.sqrt());
        assert_close(bound, 1.0 / (fan_in as f64).sqrt(), 1e-15, 0.0, "kaiming bound");
    }
}
