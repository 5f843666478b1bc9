//! `CrossEntropyLoss` and `BCEWithLogitsLoss` against the f64 oracle of
//! `tests/common/ce_oracle.rs`, over every option, shape and edge case.
//!
//! Tolerance: libtorch computes in f32 from the same f32 inputs; each loss
//! element is a short sum of f32 products of rounded logs (a few ulps, 1e-7
//! relative each), and reductions add up to 120 of them, so losses are
//! asserted to 2e-6 relative to max(|loss|, 1) (the floor of 1 because `log`
//! of a sum near 1 has an absolute, not relative, error of an ulp of 1) and
//! gradients to 2e-6 absolute (entries are at most max weight × 1).

mod common;

use common::ce_oracle::{oracle, Opts, Red, Target};
use common::*;
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::{BCEWithLogitsLoss, CrossEntropyLoss, LossError, Reduction};
use tch::{Device, Kind, Tensor};

const REL: f64 = 2e-6;

struct Case {
    input: Vec<f32>,
    shape: Vec<i64>,
    target: Target,
    opts: Opts,
}

fn reduction(r: Red) -> Reduction {
    match r {
        Red::None => Reduction::None,
        Red::Mean => Reduction::Mean,
        Red::Sum => Reduction::Sum,
    }
}

fn loss_fn(o: &Opts) -> CrossEntropyLoss {
    let mut f = CrossEntropyLoss::new()
        .ignore_index(o.ignore_index)
        .reduction(reduction(o.reduction))
        .label_smoothing(o.eps);
    if let Some(w) = &o.weight {
        f = f.weight(Tensor::from_slice(&w.iter().map(|&v| v as f32).collect::<Vec<_>>()));
    }
    f
}

fn target_tensor(target: &Target, shape: &[i64]) -> Tensor {
    match target {
        Target::Index(t) => {
            let mut s = shape.to_vec();
            s.remove(if shape.len() == 1 { 0 } else { 1 });
            Tensor::from_slice(t).view(s.as_slice())
        }
        Target::Prob(q) => {
            Tensor::from_slice(&q.iter().map(|&v| v as f32).collect::<Vec<_>>()).view(shape)
        }
    }
}

/// Our loss (flattened) and the gradient of its sum, from libtorch.
fn ours(case: &Case) -> Result<(Vec<f64>, Vec<f64>), LossError> {
    let input = Tensor::from_slice(&case.input).view(case.shape.as_slice()).set_requires_grad(true);
    let target = target_tensor(&case.target, &case.shape);
    let loss = loss_fn(&case.opts).f_forward(&input, &target)?;
    let values = Vec::<f64>::try_from(&loss.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    if case.input.is_empty() {
        return Ok((values, vec![]));
    }
    loss.sum(Kind::Float).backward();
    let grad = Vec::<f64>::try_from(&input.grad().to_kind(Kind::Double).flatten(0, -1)).unwrap();
    Ok((values, grad))
}

fn check(case: &Case, what: &str) {
    let (loss, grad) = ours(case).unwrap_or_else(|e| panic!("{what}: {e}"));
    let input: Vec<f64> = case.input.iter().map(|&v| v as f64).collect();
    let shape: Vec<usize> = case.shape.iter().map(|&d| d as usize).collect();
    let (want_loss, want_grad) = oracle(&input, &shape, &case.target, &case.opts);
    assert_eq!(loss.len(), want_loss.len(), "{what}: loss shape");
    for (i, (a, b)) in loss.iter().zip(&want_loss).enumerate() {
        if b.is_nan() {
            assert!(a.is_nan(), "{what}: loss[{i}] = {a}, PyTorch semantics say NaN");
        } else {
            assert_close(*a, *b, REL, 1.0, &format!("{what}: loss[{i}]"));
        }
    }
    assert_eq!(grad.len(), want_grad.len(), "{what}: gradient shape");
    for (i, (a, b)) in grad.iter().zip(&want_grad).enumerate() {
        if b.is_finite() {
            assert!((a - b).abs() <= REL, "{what}: grad[{i}] = {a}, oracle {b}");
        } else {
            // NaN where PyTorch's gradient is NaN (a mean over zero total
            // weight), never skipped.
            assert!(
                a.is_nan() == b.is_nan() && (b.is_nan() || a == b),
                "{what}: grad[{i}] = {a}, oracle {b}"
            );
        }
    }
}

const SHAPES: [&[i64]; 4] = [&[4], &[5, 4], &[3, 4, 5], &[2, 4, 3, 2]];
const C: i64 = 4;

/// The ignore variants of the grid: (name, ignore_index, value written into
/// a third of the targets, if any).
const IGNORES: [(&str, i64, Option<i64>); 4] = [
    ("no ignore", -100, None),
    ("ignore_index 1 (a class)", 1, Some(1)),
    ("ignore_index -100", -100, Some(-100)),
    ("ignore_index C+2", C + 2, Some(C + 2)),
];

fn elements(shape: &[i64]) -> usize {
    shape.iter().product::<i64>() as usize / C as usize
}

fn index_targets(rng: &mut Rng, shape: &[i64], ignored: Option<i64>) -> Vec<i64> {
    let mut t: Vec<i64> = (0..elements(shape)).map(|_| rng.below(C as usize) as i64).collect();
    if let Some(v) = ignored {
        for (i, x) in t.iter_mut().enumerate() {
            if i % 3 == 1 {
                *x = v;
            }
        }
    }
    t
}

/// Random probabilities along the class dim.
fn prob_targets(rng: &mut Rng, shape: &[i64]) -> Vec<f64> {
    let total: usize = shape.iter().product::<i64>() as usize;
    let s = if shape.len() == 1 { 1 } else { total / (shape[0] * C) as usize };
    let raw: Vec<f64> = (0..total).map(|_| rng.uniform(0.0, 1.0) as f64).collect();
    let mut q = vec![0.0; total];
    for n in 0..total / (C as usize * s) {
        for si in 0..s {
            let at = |k: usize| n * C as usize * s + k * s + si;
            let sum: f64 = (0..C as usize).map(|k| raw[at(k)]).sum();
            for k in 0..C as usize {
                // Rounded to f32 first: the oracle sees what libtorch sees.
                q[at(k)] = ((raw[at(k)] / sum) as f32) as f64;
            }
        }
    }
    q
}

const WEIGHTS: [f64; 4] = [0.5, 2.0, 1.0, 3.25];

#[test]
fn index_targets_over_the_whole_grid() {
    let mut rng = Rng(10);
    let mut count = 0;
    for red in [Red::None, Red::Mean, Red::Sum] {
        for weighted in [false, true] {
            for (ignore_name, ignore_index, ignored) in IGNORES {
                for eps in [0.0, 0.15] {
                    for shape in SHAPES {
                        let total = shape.iter().product::<i64>() as usize;
                        let case = Case {
                            input: (0..total).map(|_| rng.uniform(-5.0, 5.0)).collect(),
                            shape: shape.to_vec(),
                            target: Target::Index(index_targets(&mut rng, shape, ignored)),
                            opts: Opts {
                                weight: weighted.then(|| WEIGHTS.to_vec()),
                                ignore_index,
                                reduction: red,
                                eps,
                            },
                        };
                        check(
                            &case,
                            &format!(
                                "{red:?} weighted={weighted} {ignore_name} eps={eps} {shape:?}"
                            ),
                        );
                        count += 1;
                    }
                }
            }
        }
    }
    assert_eq!(count, 3 * 2 * 4 * 2 * 4);
}

#[test]
fn probability_targets_over_the_whole_grid() {
    let mut rng = Rng(11);
    for red in [Red::None, Red::Mean, Red::Sum] {
        for weighted in [false, true] {
            for eps in [0.0, 0.15] {
                for shape in SHAPES {
                    let total = shape.iter().product::<i64>() as usize;
                    let case = Case {
                        input: (0..total).map(|_| rng.uniform(-5.0, 5.0)).collect(),
                        shape: shape.to_vec(),
                        target: Target::Prob(prob_targets(&mut rng, shape)),
                        opts: Opts {
                            weight: weighted.then(|| WEIGHTS.to_vec()),
                            reduction: red,
                            eps,
                            ..Opts::default()
                        },
                    };
                    check(
                        &case,
                        &format!("probabilities {red:?} weighted={weighted} eps={eps} {shape:?}"),
                    );
                }
            }
        }
    }
}

fn simple(input: Vec<f32>, shape: &[i64], target: Target, opts: Opts) -> Case {
    Case { input, shape: shape.to_vec(), target, opts }
}

fn loss_values(case: &Case) -> Vec<f64> {
    ours(case).unwrap().0
}

#[test]
fn all_targets_ignored() {
    let input = vec![0.3f32, -1.0, 2.0, 0.5, 0.0, 1.0, -2.0, 4.0];
    for (red, want) in [(Red::Mean, f64::NAN), (Red::Sum, 0.0)] {
        for eps in [0.0, 0.15] {
            let opts = Opts { reduction: red, eps, ..Opts::default() };
            let case = simple(input.clone(), &[2, 4], Target::Index(vec![-100, -100]), opts);
            let got = loss_values(&case)[0];
            assert!(got == want || (got.is_nan() && want.is_nan()), "{red:?} eps {eps}: {got}");
            check(&case, "all ignored");
        }
    }
    let opts = Opts { reduction: Red::None, ..Opts::default() };
    let none = loss_values(&simple(input, &[2, 4], Target::Index(vec![-100, -100]), opts));
    assert_eq!(none, [0.0, 0.0]);
}

#[test]
fn zero_total_weight_is_nan_for_mean() {
    let input = vec![0.3f32, -1.0, 2.0, 0.5, 0.0, 1.0, -2.0, 4.0];
    // Targets 0 and 2 carry weight 0; class 1 and 3 weights do not count.
    for eps in [0.0, 0.15] {
        let opts = Opts { weight: Some(vec![0.0, 1.0, 0.0, 1.0]), eps, ..Opts::default() };
        let case = simple(input.clone(), &[2, 4], Target::Index(vec![0, 2]), opts);
        assert!(loss_values(&case)[0].is_nan(), "eps {eps}");
        check(&case, "zero total weight");
    }
}

#[test]
fn empty_batch_is_nan_for_mean_and_zero_for_sum() {
    for target in [Target::Index(vec![]), Target::Prob(vec![])] {
        for (red, want) in [(Red::Mean, f64::NAN), (Red::Sum, 0.0)] {
            let opts = Opts { reduction: red, ..Opts::default() };
            let got = loss_values(&simple(vec![], &[0, 4], target.clone(), opts))[0];
            assert!(got == want || (got.is_nan() && want.is_nan()), "{target:?} {red:?}: {got}");
        }
        let opts = Opts { reduction: Red::None, ..Opts::default() };
        assert!(loss_values(&simple(vec![], &[0, 4], target, opts)).is_empty());
    }
}

#[test]
fn one_hot_probabilities_equal_index_targets_except_weighted_mean() {
    let mut rng = Rng(12);
    let shape = [6i64, 4];
    let input: Vec<f32> = (0..24).map(|_| rng.uniform(-3.0, 3.0)).collect();
    let idx: Vec<i64> = (0..6).map(|_| rng.below(4) as i64).collect();
    let onehot: Vec<f64> =
        idx.iter().flat_map(|&y| (0..4).map(move |k| if k == y { 1.0 } else { 0.0 })).collect();
    for red in [Red::None, Red::Mean, Red::Sum] {
        for weighted in [false, true] {
            for eps in [0.0, 0.15] {
                let opts = Opts {
                    weight: weighted.then(|| WEIGHTS.to_vec()),
                    reduction: red,
                    eps,
                    ..Opts::default()
                };
                let a = loss_values(&simple(
                    input.clone(),
                    &shape,
                    Target::Index(idx.clone()),
                    opts.clone(),
                ));
                let b =
                    loss_values(&simple(input.clone(), &shape, Target::Prob(onehot.clone()), opts));
                let what = format!("{red:?} weighted={weighted} eps={eps}");
                if weighted && red == Red::Mean {
                    // Pinned-down PyTorch difference: the index path divides by
                    // Σ w_y (weights of the targets), the probability path by N.
                    let sum_w: f64 = idx.iter().map(|&y| WEIGHTS[y as usize]).sum();
                    assert_close(a[0] * sum_w / 6.0, b[0], REL, 1.0, &what);
                    assert!((a[0] - b[0]).abs() > 1e-3, "{what}: expected the two means to differ");
                } else {
                    for (x, y) in a.iter().zip(&b) {
                        assert_close(*x, *y, REL, 1.0, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn unit_weights_equal_no_weights() {
    let mut rng = Rng(13);
    for shape in SHAPES {
        let total = shape.iter().product::<i64>() as usize;
        let input: Vec<f32> = (0..total).map(|_| rng.uniform(-5.0, 5.0)).collect();
        let t = Target::Index(index_targets(&mut rng, shape, Some(-100)));
        for red in [Red::None, Red::Mean, Red::Sum] {
            let plain = Opts { reduction: red, eps: 0.1, ..Opts::default() };
            let unit = Opts { weight: Some(vec![1.0; 4]), ..plain.clone() };
            let a = loss_values(&simple(input.clone(), shape, t.clone(), plain));
            let b = loss_values(&simple(input.clone(), shape, t.clone(), unit));
            for (x, y) in a.iter().zip(&b) {
                assert_close(*x, *y, 1e-7, 1.0, &format!("{shape:?} {red:?}"));
            }
        }
    }
}

#[test]
fn shifting_logits_by_1e7_changes_nothing() {
    // Integer logits stay exact in f32 after + 1e7 (below 2^24), and
    // log-softmax subtracts the max exactly, so the loss is the same.
    let mut rng = Rng(14);
    let input: Vec<f32> = (0..40).map(|_| (rng.below(11) as f32) - 5.0).collect();
    let shifted: Vec<f32> = input.iter().map(|v| v + 1e7).collect();
    let t = Target::Index((0..10).map(|_| rng.below(4) as i64).collect());
    for eps in [0.0, 0.15] {
        let opts = Opts { eps, weight: Some(WEIGHTS.to_vec()), ..Opts::default() };
        let a = loss_values(&simple(input.clone(), &[10, 4], t.clone(), opts.clone()))[0];
        let b = loss_values(&simple(shifted.clone(), &[10, 4], t.clone(), opts))[0];
        assert_eq!(a, b, "eps {eps}");
    }
}

#[test]
fn extreme_logits_stay_finite() {
    for scale in [1e4f32, 1e30] {
        let input = vec![scale, -scale, 0.0, 1.0, -scale, scale, 2.0, 0.5];
        for eps in [0.0, 0.15] {
            for target in [0i64, 1] {
                let opts = Opts { eps: if scale > 1e10 { 0.0 } else { eps }, ..Opts::default() };
                let case =
                    simple(input.clone(), &[2, 4], Target::Index(vec![target, target + 2]), opts);
                let (loss, grad) = ours(&case).unwrap();
                assert!(loss[0].is_finite(), "scale {scale} eps {eps} target {target}: {loss:?}");
                assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
                check(&case, &format!("scale {scale} eps {eps} target {target}"));
            }
        }
    }
}

#[test]
fn the_seed_path_and_the_full_loss_agree_bit_for_bit() {
    let _rng = rng_lock();
    tch::manual_seed(0);
    let logits = Tensor::randn([10, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let targets = Tensor::randint(3, [10], (Kind::Int64, Device::Cpu));
    let a = cross_entropy(&logits, &targets);
    a.backward();
    let ga = logits.grad().copy();
    let _ = logits.grad().zero_();
    let b = CrossEntropyLoss::new().forward(&logits, &targets);
    b.backward();
    assert_eq!(a.double_value(&[]).to_bits(), b.double_value(&[]).to_bits());
    assert!(ga.equal(&logits.grad()), "gradients differ");
}

#[test]
fn the_seed_path_differs_where_documented() {
    // (N, C, d1): cross_entropy_for_logits takes the *last* dim as classes.
    let x = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).view([1, 3, 2]);
    let t = Tensor::from_slice(&[0i64, 2]).view([1, 2]);
    let full = CrossEntropyLoss::new().forward(&x, &t).double_value(&[]);
    let oracle_value = oracle(
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        &[1, 3, 2],
        &Target::Index(vec![0, 2]),
        &Opts::default(),
    )
    .0[0];
    assert_close(full, oracle_value, REL, 1.0, "K-dim");
    // By hand, PyTorch's class dim 1: columns (0, 2, 4) with target 0 and
    // (1, 3, 5) with target 2: lse(0, 2, 4) - 0 and lse(1, 3, 5) - 5.
    let lse = |v: [f64; 3]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
    let by_hand = (lse([0.0, 2.0, 4.0]) + lse([1.0, 3.0, 5.0]) - 5.0) / 2.0;
    assert_close(full, by_hand, REL, 1.0, "K-dim by hand");
    // The seed's cross_entropy_for_logits on the same tensors does not give
    // another number: its nll_loss (not nll_loss_nd) refuses 3-D input, and
    // tch has no f_ form of the call, so it panics.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cross_entropy(&x, &t)));
    let payload = caught.expect_err("cross_entropy_for_logits accepted (N, C, d1) logits");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains("input tensor should be 1D or 2D"), "{message}");
    // Unbatched (C) logits: the last dim is the class dim, so it agrees.
    let x1 = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
    let t0 = Tensor::from_slice(&[2i64]).view([] as [i64; 0]);
    let seed = x1.cross_entropy_for_logits(&t0).double_value(&[]);
    let full1 = CrossEntropyLoss::new().forward(&x1, &t0).double_value(&[]);
    assert_eq!(seed.to_bits(), full1.to_bits(), "unbatched");
    // f64 logits: cross_entropy_for_logits computes in f32, we keep f64.
    let x64 = Tensor::from_slice(&[0.1f64, 0.2, 0.3]).view([1, 3]);
    let t1 = Tensor::from_slice(&[1i64]);
    assert_eq!(CrossEntropyLoss::new().forward(&x64, &t1).kind(), Kind::Double);
    assert_eq!(cross_entropy(&x64, &t1).kind(), Kind::Float);
}

// ---------------------------------------------------------------- errors --

fn err(input: &Tensor, target: &Tensor, f: CrossEntropyLoss) -> String {
    f.f_forward(input, target).expect_err("expected an error").to_string()
}

#[test]
fn bad_inputs_get_clear_errors() {
    let x = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0i64, 1, 2, 1]);
    let p = Tensor::full([4, 3], 1.0 / 3.0, (Kind::Float, Device::Cpu));
    let cases: Vec<(String, &str)> = vec![
        (
            err(&x, &Tensor::from_slice(&[0i64, 1, 3, 1]), CrossEntropyLoss::new()),
            "target 3 at [2] is out of bounds",
        ),
        (
            err(&x, &Tensor::from_slice(&[0i64, -1, 2, 1]), CrossEntropyLoss::new()),
            "target -1 at [1] is out of bounds",
        ),
        (
            err(&x, &Tensor::from_slice(&[0i32, 1, 2, 1]), CrossEntropyLoss::new()),
            "must have dtype Int64 (Long) or Uint8 (Byte), got Int",
        ),
        (
            err(&x, &Tensor::from_slice(&[0.0f32, 1.0, 2.0, 1.0]), CrossEntropyLoss::new()),
            "got Float",
        ),
        (
            err(&x, &Tensor::from_slice(&[0i64, 1, 2]), CrossEntropyLoss::new()),
            "target shape [3] does not fit input shape [4, 3]",
        ),
        (
            err(
                &Tensor::zeros([2, 3, 5], (Kind::Float, Device::Cpu)),
                &Tensor::zeros([2, 4], (Kind::Int64, Device::Cpu)),
                CrossEntropyLoss::new(),
            ),
            "expected [2, 5]",
        ),
        (
            err(&x, &t, CrossEntropyLoss::new().weight(Tensor::from_slice(&[1.0f32, 2.0]))),
            "weight must be a 1-D tensor of 3 values, one per class, got shape [2]",
        ),
        (
            err(
                &x,
                &t,
                CrossEntropyLoss::new().weight(Tensor::ones([1, 3], (Kind::Float, Device::Cpu))),
            ),
            "got shape [1, 3]",
        ),
        (
            err(&x, &t, CrossEntropyLoss::new().weight(Tensor::from_slice(&[1.0f64, 2.0, 3.0]))),
            "weight has dtype Double but the input has Float",
        ),
        (
            err(&x, &t, CrossEntropyLoss::new().label_smoothing(1.5)),
            "label_smoothing must be between 0.0 and 1.0, got 1.5",
        ),
        (err(&x, &t, CrossEntropyLoss::new().label_smoothing(-0.1)), "got -0.1"),
        (err(&x, &t, CrossEntropyLoss::new().label_smoothing(f64::NAN)), "got NaN"),
        (
            err(&x, &p, CrossEntropyLoss::new().ignore_index(1)),
            "ignore_index (1) is not supported with class-probability",
        ),
        (
            err(&x, &Tensor::ones([4, 3], (Kind::Int64, Device::Cpu)), CrossEntropyLoss::new()),
            "holds class probabilities and must be floating point, got Int64",
        ),
        (
            err(&Tensor::ones([4, 3], (Kind::Int64, Device::Cpu)), &t, CrossEntropyLoss::new()),
            "input must be floating point",
        ),
        (
            err(&Tensor::from(1.0f32), &Tensor::from(0i64), CrossEntropyLoss::new()),
            "got a 0-dim tensor",
        ),
        (
            err(&Tensor::zeros([4, 0], (Kind::Float, Device::Cpu)), &t, CrossEntropyLoss::new()),
            "no classes",
        ),
        (err(&x, &t, CrossEntropyLoss::new().reduction(Reduction::Other(7))), "Other(7)"),
    ];
    for (message, expected) in cases {
        assert!(message.contains(expected), "'{message}' lacks '{expected}'");
    }
    // Negative ignore_index with probabilities is allowed, as in PyTorch.
    assert!(CrossEntropyLoss::new().ignore_index(-5).f_forward(&x, &p).is_ok());
    // Out-of-range in a K-dim target names the position.
    let t2 = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 9]).view([2, 3]);
    let x2 = Tensor::zeros([2, 4, 3], (Kind::Float, Device::Cpu));
    assert!(err(&x2, &t2, CrossEntropyLoss::new()).contains("target 9 at [1, 2]"));
}

#[test]
fn forward_panics_with_the_same_message() {
    let x = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0i64, 5]);
    let caught = std::panic::catch_unwind(|| CrossEntropyLoss::new().forward(&x, &t));
    let payload = caught.expect_err("forward should panic");
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(message.contains("CrossEntropyLoss: target 5 at [1] is out of bounds"), "{message}");
}

// ------------------------------------------------------------ the binary --

/// 2-class cross-entropy on (z0, z1) is BCE-with-logits on z1 − z0, and both
/// are softplus of the signed margin.
#[test]
fn two_class_cross_entropy_is_bce_on_the_margin() {
    let mut rng = Rng(15);
    let rows = rng.matrix(50, 2, -30.0, 30.0);
    let y: Vec<i64> = (0..50).map(|_| rng.below(2) as i64).collect();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let z = Tensor::from_slice(&flat).view([50, 2]);
    let yt = Tensor::from_slice(&y);
    for red in [Reduction::None, Reduction::Mean, Reduction::Sum] {
        let ce = CrossEntropyLoss::new().reduction(red).forward(&z, &yt);
        let margin = z.select(1, 1) - z.select(1, 0);
        let bce =
            BCEWithLogitsLoss::new().reduction(red).forward(&margin, &yt.to_kind(Kind::Float));
        let (ce, bce) = (
            Vec::<f64>::try_from(&ce.to_kind(Kind::Double).flatten(0, -1)).unwrap(),
            Vec::<f64>::try_from(&bce.to_kind(Kind::Double).flatten(0, -1)).unwrap(),
        );
        let per_row: Vec<f64> = rows
            .iter()
            .zip(&y)
            .map(|(r, &t)| {
                let m = r[1] as f64 - r[0] as f64;
                softplus(if t == 1 { -m } else { m })
            })
            .collect();
        let want: Vec<f64> = match red {
            Reduction::None => per_row,
            Reduction::Mean => vec![per_row.iter().sum::<f64>() / 50.0],
            _ => vec![per_row.iter().sum::<f64>()],
        };
        for ((a, b), w) in ce.iter().zip(&bce).zip(&want) {
            // The margin z1 − z0 is rounded to f32 once more: 1e-5 relative.
            assert_close(*a, *w, 1e-5, 1.0, "cross-entropy");
            assert_close(*b, *w, 1e-5, 1.0, "BCE on the margin");
        }
    }
}

/// BCE-with-logits oracle: −w·(pw·y·log σ(x) + (1 − y)·log σ(−x)), with
/// log σ(x) = −softplus(−x).
fn bce_oracle(x: f64, y: f64, w: f64, pw: f64) -> f64 {
    w * (pw * y * softplus(-x) + (1.0 - y) * softplus(x))
}

#[test]
fn bce_with_logits_matches_the_oracle_and_stays_finite() {
    let xs = [0.0f32, 1.5, -2.0, 100.0, -100.0, 1e4, -1e4, 88.0, -88.0, 1e30, -1e30];
    let ys = [1.0f32, 0.0, 0.3, 1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 1.0, 0.0];
    let x = Tensor::from_slice(&xs).view([11, 1]);
    let y = Tensor::from_slice(&ys).view([11, 1]);
    let w: Vec<f32> = (0..11).map(|i| 0.5 + i as f32 / 4.0).collect();
    let pw = 2.5f32;
    for (weighted, pos) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut f = BCEWithLogitsLoss::new().reduction(Reduction::None);
        if weighted {
            f = f.weight(Tensor::from_slice(&w).view([11, 1]));
        }
        if pos {
            f = f.pos_weight(Tensor::from_slice(&[pw]));
        }
        let got =
            Vec::<f64>::try_from(&f.forward(&x, &y).to_kind(Kind::Double).flatten(0, -1)).unwrap();
        for i in 0..11 {
            let want = bce_oracle(
                xs[i] as f64,
                ys[i] as f64,
                if weighted { w[i] as f64 } else { 1.0 },
                if pos { pw as f64 } else { 1.0 },
            );
            assert!(got[i].is_finite(), "x = {}: {}", xs[i], got[i]);
            assert_close(
                got[i],
                want,
                1e-6,
                1.0,
                &format!("x={} y={} w={weighted} pw={pos}", xs[i], ys[i]),
            );
        }
    }
    // Mean and sum.
    let mean = BCEWithLogitsLoss::new().forward(&x, &y).double_value(&[]);
    let want: f64 =
        xs.iter().zip(&ys).map(|(&a, &b)| bce_oracle(a as f64, b as f64, 1.0, 1.0)).sum::<f64>()
            / 11.0;
    assert_close(mean, want, 1e-6, 1.0, "mean");
    let sum = BCEWithLogitsLoss::new().reduction(Reduction::Sum).forward(&x, &y).double_value(&[]);
    assert_close(sum, want * 11.0, 1e-6, 1.0, "sum");
}

#[test]
fn bce_bad_inputs_get_clear_errors() {
    let x = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
    let e = |r: Result<Tensor, LossError>| r.expect_err("expected an error").to_string();
    let cases = [
        (
            e(BCEWithLogitsLoss::new()
                .f_forward(&x, &Tensor::zeros([4], (Kind::Float, Device::Cpu)))),
            "target shape [4] does not fit",
        ),
        (
            e(BCEWithLogitsLoss::new()
                .f_forward(&x, &Tensor::zeros([4, 3], (Kind::Int64, Device::Cpu)))),
            "must be floating point, got Int64",
        ),
        (
            e(BCEWithLogitsLoss::new()
                .pos_weight(Tensor::ones([2], (Kind::Float, Device::Cpu)))
                .f_forward(&x, &y)),
            "pos_weight must be broadcastable to the input's shape [4, 3], got shape [2]",
        ),
        (
            e(BCEWithLogitsLoss::new()
                .weight(Tensor::ones([5, 3], (Kind::Float, Device::Cpu)))
                .f_forward(&x, &y)),
            "weight must be broadcastable",
        ),
        (
            e(BCEWithLogitsLoss::new()
                .weight(Tensor::ones([3], (Kind::Double, Device::Cpu)))
                .f_forward(&x, &y)),
            "weight has dtype Double",
        ),
    ];
    for (message, expected) in cases {
        assert!(message.contains(expected), "'{message}' lacks '{expected}'");
    }
}
