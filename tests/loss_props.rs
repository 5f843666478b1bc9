//! Property tests of `CrossEntropyLoss` (proptest): random shapes, class
//! counts, logits (ordinary, ±1e4, ±1e30, subnormal), weights, ignore_index,
//! label smoothing, reductions and target kinds. Valid inputs give the f64
//! oracle's value within 2e-6 relative (to max(|value|, 1); loss_oracle.rs
//! gives the reason for both the bound and the floor), or NaN where PyTorch defines NaN;
//! `f_forward` never panics on any input, valid or not.

mod common;

use common::ce_oracle::{oracle, Opts, Red, Target};
use cross_entropy_tch::{CrossEntropyLoss, Reduction};
use proptest::prelude::*;
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
struct Input {
    shape: Vec<usize>,
    logits: Vec<f32>,
    target: Target,
    opts: Opts,
}

fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -10.0f32..10.0,
        1 => prop_oneof![Just(1e4f32), Just(-1e4f32), Just(1e30f32), Just(-1e30f32)],
        1 => prop_oneof![Just(1e-40f32), Just(-1e-42f32), Just(0.0f32), Just(f32::MIN_POSITIVE)],
    ]
}

fn input() -> impl Strategy<Value = Input> {
    (1usize..5, 1usize..6, 0usize..5, 1usize..4, 1usize..3)
        .prop_flat_map(|(rank, c, n, d1, d2)| {
            let shape: Vec<usize> = match rank {
                1 => vec![c],
                2 => vec![n, c],
                3 => vec![n, c, d1],
                _ => vec![n, c, d1, d2],
            };
            let total: usize = shape.iter().product();
            let elements = total / c;
            let ignore_index = prop_oneof![Just(-100i64), Just(0), Just(c as i64 + 1), Just(-1)];
            let index = proptest::collection::vec(0..c as i64, elements);
            let probs = proptest::collection::vec(0.0f64..1.0, total);
            (
                Just(shape),
                proptest::collection::vec(logit(), total),
                any::<bool>(),
                index,
                probs,
                proptest::option::of(proptest::collection::vec(0.0f64..3.0, c)),
                ignore_index,
                prop_oneof![Just(Red::None), Just(Red::Mean), Just(Red::Sum)],
                prop_oneof![Just(0.0f64), 0.0f64..=1.0],
                proptest::collection::vec(any::<bool>(), elements),
            )
        })
        .prop_map(
            |(
                shape,
                logits,
                soft,
                mut index,
                probs,
                weight,
                ignore_index,
                reduction,
                eps,
                ignored,
            )| {
                let weight = weight.map(|w| w.iter().map(|&v| v as f32 as f64).collect());
                let target = if soft {
                    Target::Prob(probs.iter().map(|&v| v as f32 as f64).collect())
                } else {
                    for (t, ig) in index.iter_mut().zip(ignored) {
                        if ig {
                            *t = ignore_index;
                        }
                    }
                    Target::Index(index)
                };
                // Probability targets need a negative ignore_index.
                let ignore_index = if soft { -100 } else { ignore_index };
                Input { shape, logits, target, opts: Opts { weight, ignore_index, reduction, eps } }
            },
        )
}

fn reduction(r: Red) -> Reduction {
    match r {
        Red::None => Reduction::None,
        Red::Mean => Reduction::Mean,
        Red::Sum => Reduction::Sum,
    }
}

fn tensors(i: &Input) -> (Tensor, Tensor, CrossEntropyLoss) {
    let shape: Vec<i64> = i.shape.iter().map(|&d| d as i64).collect();
    let x = Tensor::from_slice(&i.logits).view(shape.as_slice());
    let target = match &i.target {
        Target::Index(t) => {
            let mut s = shape.clone();
            s.remove(if shape.len() == 1 { 0 } else { 1 });
            Tensor::from_slice(t).view(s.as_slice())
        }
        Target::Prob(q) => Tensor::from_slice(&q.iter().map(|&v| v as f32).collect::<Vec<_>>())
            .view(shape.as_slice()),
    };
    let mut f = CrossEntropyLoss::new()
        .ignore_index(i.opts.ignore_index)
        .reduction(reduction(i.opts.reduction))
        .label_smoothing(i.opts.eps);
    if let Some(w) = &i.opts.weight {
        f = f.weight(Tensor::from_slice(&w.iter().map(|&v| v as f32).collect::<Vec<_>>()));
    }
    (x, target, f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn valid_inputs_match_the_oracle(i in input()) {
        let (x, t, f) = tensors(&i);
        let loss = f.f_forward(&x, &t).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let got = Vec::<f64>::try_from(&loss.to_kind(Kind::Double).flatten(0, -1)).unwrap();
        let logits: Vec<f64> = i.logits.iter().map(|&v| v as f64).collect();
        let (want, _) = oracle(&logits, &i.shape, &i.target, &i.opts);
        prop_assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            if b.is_nan() {
                prop_assert!(a.is_nan(), "got {}, PyTorch semantics say NaN", a);
            } else {
                let tol = 2e-6 * b.abs().max(1.0);
                prop_assert!((a - b).abs() <= tol, "got {:e}, oracle {:e}", a, b);
            }
        }
    }

    /// Any input, valid or not: an `Ok` or an `Err`, never a panic (nor a
    /// C++ exception escaping as one).
    #[test]
    fn f_forward_never_panics(
        i in input(),
        bad_target in prop_oneof![Just(None), (-5i64..10).prop_map(Some)],
        bad_eps in prop_oneof![Just(None), Just(Some(-0.5)), Just(Some(1.5)), Just(Some(f64::NAN))],
        twist in 0u8..6,
    ) {
        let (x, mut t, mut f) = tensors(&i);
        if let (Some(v), Target::Index(_)) = (bad_target, &i.target) {
            if t.numel() > 0 {
                let _ = t.view(-1).get(0).fill_(v);
            }
        }
        if let Some(e) = bad_eps {
            f = f.label_smoothing(e);
        }
        match twist {
            1 => t = t.to_kind(Kind::Int),
            2 => t = t.to_kind(Kind::Double),
            3 => f = f.weight(Tensor::ones([7], (Kind::Float, tch::Device::Cpu))),
            4 => f = f.weight(Tensor::ones([i.shape[if i.shape.len() == 1 { 0 } else { 1 }] as i64], (Kind::Double, tch::Device::Cpu))),
            5 => t = t.unsqueeze(0),
            _ => {}
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.f_forward(&x, &t).map(|_| ())));
        prop_assert!(outcome.is_ok(), "f_forward panicked");
    }
}
