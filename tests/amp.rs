//! Mixed precision in the library against values computed here, never
//! libtorch against itself: the autocast region's dtypes and its state, a
//! bf16 `nn.Linear` + `nn.CrossEntropyLoss` (forward, loss, gradient)
//! against an f64 oracle of the bf16-rounded operands, and the GradScaler's
//! rules (unscaling, skipped steps, backoff and growth) against the rule
//! worked out step by step. The bit-for-bit comparison with PyTorch's
//! `torch.autocast` and `torch.amp.GradScaler` is `tests/train.rs`'s
//! `mixed_precision_is_bit_equal_to_pytorch_autocast`.
//!
//! ```python
//! with torch.autocast("cpu", dtype=torch.bfloat16):
//!     out = model(x)          # bfloat16: linear is on autocast's low-precision list
//!     loss = loss_fn(out, y)  # float32: cross_entropy_loss is on its f32 list
//! ```

mod common;

use common::*;
use cross_entropy_tch::amp::{self, AmpDtype, AmpError, GradScaler, GradScalerConfig};
use cross_entropy_tch::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use cross_entropy_tch::CrossEntropyLoss;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// f32 → the nearest bfloat16 (ties to even), as an f32.
fn bf16(v: f32) -> f32 {
    let bits = v.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    f32::from_bits((bits + round) & 0xffff_0000)
}

/// One bfloat16 ulp at `v` (8 significant bits).
fn bf16_ulp(v: f64) -> f64 {
    let e = v.abs().max(f32::MIN_POSITIVE as f64).log2().floor();
    2f64.powf(e - 7.0)
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

#[test]
fn autocast_regions_nest_restore_and_survive_a_panic() {
    assert!(!amp::is_enabled(Device::Cpu));
    let inner = amp::autocast(Device::Cpu, AmpDtype::Bf16, || {
        assert!(amp::is_enabled(Device::Cpu));
        let nested = amp::autocast(Device::Cpu, AmpDtype::Fp16, || {
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu))
                .matmul(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))
                .kind()
        })
        .unwrap();
        let after = Tensor::ones([2, 2], (Kind::Float, Device::Cpu))
            .matmul(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))
            .kind();
        (nested, after, amp::is_enabled(Device::Cpu))
    })
    .unwrap();
    // The nested fp16 region, then the outer bf16 one restored.
    assert_eq!(inner, (Kind::Half, Kind::BFloat16, true));
    assert!(!amp::is_enabled(Device::Cpu), "the region left autocast on");
    let caught = std::panic::catch_unwind(|| {
        amp::autocast(Device::Cpu, AmpDtype::Bf16, || panic!("in the region"))
    });
    assert!(caught.is_err());
    assert!(!amp::is_enabled(Device::Cpu), "a panic left autocast on");
    // Outside any region, matmul is f32 again.
    let k = Tensor::ones([2, 2], (Kind::Float, Device::Cpu))
        .matmul(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))
        .kind();
    assert_eq!(k, Kind::Float);
}

/// bf16 `Linear(10, 3)` + cross-entropy on 16 rows. The logits: libtorch
/// multiplies the bf16-rounded input and weight with f32 accumulation and
/// rounds the sum to bf16 once; the f64 sum of the same bf16 operands
/// differs from that f32 sum by a few f32 ulps, which can move the final
/// rounding by at most one bf16 ulp. The loss is computed in f32 from those
/// bf16 logits (1e-6 relative, as tests/analytic.rs). The weight's gradient:
/// the f32 logit gradient is rounded to bf16, multiplied with the bf16
/// input in f32 and rounded to bf16: one bf16 ulp of the result, plus one
/// ulp of each logit gradient where f32 and f64 round it differently.
#[test]
fn bf16_linear_and_loss_match_an_f64_oracle_of_the_rounded_operands() {
    let _lock = rng_lock();
    let (n, d, c) = (16usize, 10usize, 3usize);
    let mut rng = Rng(24);
    let x = rng.matrix(n, d, -2.0, 2.0);
    let w = rng.matrix(c, d, -0.5, 0.5);
    let b: Vec<f32> = (0..c).map(|_| rng.uniform(-0.5, 0.5)).collect();
    let targets: Vec<usize> = (0..n).map(|_| rng.below(c)).collect();
    let y = Tensor::from_slice(&targets.iter().map(|&t| t as i64).collect::<Vec<_>>());

    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root(), d as i64, c as i64, Default::default());
    tch::no_grad(|| {
        linear.ws.shallow_clone().copy_(&matrix_tensor(&w));
        linear.bs.as_ref().unwrap().shallow_clone().copy_(&Tensor::from_slice(&b));
    });
    // A weighted loss too: f32 weights with bf16 logits, as in PyTorch.
    let weights = Tensor::from_slice(&[1.0f32, 2.0, 0.5]);
    let (logits, loss, weighted) = amp::autocast(Device::Cpu, AmpDtype::Bf16, || {
        let logits = linear.forward(&matrix_tensor(&x));
        let loss = CrossEntropyLoss::new().f_forward(&logits, &y).unwrap();
        let weighted = CrossEntropyLoss::new().weight(weights).f_forward(&logits, &y).unwrap();
        (logits, loss, weighted)
    })
    .unwrap();
    assert_eq!(logits.kind(), Kind::BFloat16, "linear runs in bf16");
    assert_eq!(loss.kind(), Kind::Float, "the loss is computed in f32");
    assert_eq!(weighted.kind(), Kind::Float);

    let got = values(&logits);
    let mut oracle = vec![vec![0f64; c]; n];
    for i in 0..n {
        for k in 0..c {
            let sum: f64 = (0..d).map(|j| bf16(x[i][j]) as f64 * bf16(w[k][j]) as f64).sum::<f64>()
                + bf16(b[k]) as f64;
            oracle[i][k] = sum;
            let g = got[i * c + k] as f64;
            assert!(
                (g - sum).abs() <= bf16_ulp(sum) * 1.0001,
                "logit [{i}][{k}]: {g} against {sum} (one bf16 ulp {})",
                bf16_ulp(sum)
            );
        }
    }
    // The loss of exactly the bf16 logits libtorch produced.
    let bf16_logits: Vec<Vec<f64>> =
        (0..n).map(|i| (0..c).map(|k| got[i * c + k] as f64).collect()).collect();
    let expected = cross_entropy_mean(&bf16_logits, &targets);
    assert_close(loss.double_value(&[]), expected, 1e-6, 1.0, "bf16 loss");
    let wsum: f64 = targets.iter().map(|&t| [1.0, 2.0, 0.5][t]).sum();
    let wexpected: f64 = bf16_logits
        .iter()
        .zip(&targets)
        .map(|(row, &t)| [1.0, 2.0, 0.5][t] * nll_of_row(row, t))
        .sum::<f64>()
        / wsum;
    assert_close(weighted.double_value(&[]), wexpected, 1e-6, 1.0, "weighted bf16 loss");

    loss.backward();
    let grad = linear.ws.grad();
    assert_eq!(grad.kind(), Kind::Float, "the f32 weight's gradient is f32");
    let grad = values(&grad);
    let dlogits = cross_entropy_grad(&bf16_logits, &targets);
    for k in 0..c {
        for j in 0..d {
            let xb = |i: usize| bf16(x[i][j]) as f64;
            let dl = |i: usize| bf16(dlogits[i][k] as f32) as f64;
            let sum: f64 = (0..n).map(|i| dl(i) * xb(i)).sum();
            let spread: f64 = (0..n).map(|i| bf16_ulp(dl(i)) * xb(i).abs()).sum();
            let g = grad[k * d + j] as f64;
            let tol = bf16_ulp(sum) + spread;
            assert!((g - sum).abs() <= tol, "dW[{k}][{j}]: {g} against {sum} (bound {tol})");
        }
    }
}

/// `GradScaler(init_scale=1024, growth_interval=2)` on one parameter with
/// SGD(lr=0.5), its gradients given: a step with an inf gradient is skipped
/// (the parameter unchanged) and halves the scale, two finite steps in a
/// row double it. With a scale that is a power of two the unscaled gradient
/// is the gradient exactly, so each taken step is `p -= 0.5 * g` in f32.
#[test]
fn grad_scaler_skips_backs_off_and_grows_as_pytorchs_rule_says() {
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root().zeros("p", &[3]);
    let mut sgd = OptimizerConfig::new(OptimizerKind::Sgd);
    sgd.lr = 0.5;
    let mut optimizer = Optimizer::build(&vs, &sgd).unwrap();
    let config = GradScalerConfig { init_scale: 1024.0, growth_interval: 2, ..Default::default() };
    let mut scaler = GradScaler::new(Device::Cpu, config).unwrap();
    let params = vs.trainable_variables();
    let grads: [[f32; 3]; 6] = [
        [0.25, -1.0, 2.0],
        [f32::INFINITY, 0.0, 1.0],
        [0.5, 0.5, -0.5],
        [1.0, 2.0, 3.0],
        [f32::NAN, 1.0, 1.0],
        [-0.125, 0.0, 4.0],
    ];
    let (mut scale, mut tracker) = (1024f64, 0i64);
    let mut expected = [0f32; 3];
    for g in grads {
        optimizer.zero_grad();
        let loss = (&p * Tensor::from_slice(&g)).sum(Kind::Float);
        scaler.scale(&loss).unwrap().backward();
        let taken = scaler.step(&mut optimizer, &params).unwrap();
        scaler.update().unwrap();
        // The rule (_amp_update_scale_), in f64.
        let finite = g.iter().all(|v| v.is_finite());
        assert_eq!(taken, finite, "{g:?}: a step is taken iff every gradient is finite");
        if finite {
            for i in 0..3 {
                expected[i] -= 0.5 * g[i];
            }
            tracker += 1;
            if tracker == 2 {
                (scale, tracker) = (scale * 2.0, 0);
            }
        } else {
            (scale, tracker) = (scale * 0.5, 0);
        }
        let state = scaler.state().unwrap();
        assert_eq!((state.scale, state.growth_tracker), (scale, tracker), "after {g:?}");
        assert_eq!(values(&p.detach()), expected, "the parameter after {g:?}");
    }
}

/// unscale_ multiplies by `1/scale` rounded to f32 (PyTorch takes it in
/// f64, then rounds): with scale 3 the unscaled gradient is
/// `f32(g * 3) * f32(1/3)`, each product rounded once in f32, not `g`.
#[test]
fn unscale_multiplies_by_the_f64_reciprocal_rounded_to_f32() {
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root().zeros("p", &[4]);
    let config = GradScalerConfig { init_scale: 3.0, ..Default::default() };
    let mut scaler = GradScaler::new(Device::Cpu, config).unwrap();
    let g = [0.1f32, -7.7, 1e-3, 12345.678];
    let loss = (&p * Tensor::from_slice(&g)).sum(Kind::Float);
    scaler.scale(&loss).unwrap().backward();
    let params = vs.trainable_variables();
    scaler.unscale_(&params).unwrap();
    let inv = (1.0f64 / 3.0) as f32;
    let expected: Vec<f32> = g.iter().map(|&v| (v * 3.0f32) * inv).collect();
    let got = values(&p.grad());
    for (a, b) in got.iter().zip(&expected) {
        assert_eq!(a.to_bits(), b.to_bits(), "{got:?} against {expected:?}");
    }
    // PyTorch's order rules: a second unscale_ before update() is refused.
    assert!(matches!(scaler.unscale_(&params), Err(AmpError::Order(_))));
    let mut optimizer = Optimizer::build(&vs, &OptimizerConfig::new(OptimizerKind::Sgd)).unwrap();
    assert!(scaler.step(&mut optimizer, &params).unwrap());
    assert!(matches!(scaler.step(&mut optimizer, &params), Err(AmpError::Order(_))));
    scaler.update().unwrap();
    assert!(matches!(scaler.update(), Err(AmpError::Order(_))), "update() without a step");
}

#[test]
fn grad_scaler_settings_and_states_out_of_range_are_refused() {
    let bad = [
        GradScalerConfig { init_scale: 0.0, ..Default::default() },
        GradScalerConfig { init_scale: f64::INFINITY, ..Default::default() },
        GradScalerConfig { growth_factor: 1.0, ..Default::default() },
        GradScalerConfig { backoff_factor: 1.0, ..Default::default() },
        GradScalerConfig { growth_interval: 0, ..Default::default() },
    ];
    for c in bad {
        assert!(matches!(GradScaler::new(Device::Cpu, c), Err(AmpError::Config { .. })), "{c:?}");
    }
    let mut scaler = GradScaler::new(Device::Cpu, GradScalerConfig::default()).unwrap();
    let good = scaler.state().unwrap();
    assert_eq!(good.scale, 65536.0);
    for state in [
        cross_entropy_tch::amp::GradScalerState { scale: -1.0, ..good },
        cross_entropy_tch::amp::GradScalerState { scale: 1e39, ..good },
        cross_entropy_tch::amp::GradScalerState { growth_tracker: -1, ..good },
        cross_entropy_tch::amp::GradScalerState { backoff_factor: 2.0, ..good },
    ] {
        assert!(matches!(scaler.load_state(&state), Err(AmpError::State(_))), "{state:?}");
    }
    assert_eq!(scaler.state().unwrap(), good, "a refused state changed nothing");
    let loaded =
        cross_entropy_tch::amp::GradScalerState { scale: 512.0, growth_tracker: 7, ..good };
    scaler.load_state(&loaded).unwrap();
    assert_eq!(scaler.state().unwrap(), loaded);
}
