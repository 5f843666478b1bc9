//! The optimizers against updates worked out by hand in f64, and the trap
//! they exist for: tch's own Adam is not `torch.optim.Adam` (the bit-for-bit
//! comparison with PyTorch is `tests/train.rs`).
//!
//! ```python
//! # torch.optim.Adam, one step from zero state (bias-corrected):
//! m = (1 - b1) * g;  v = (1 - b2) * g * g
//! p -= lr * (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps)
//! ```

mod common;

use common::{assert_close, rng_lock};
use cross_entropy_tch::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use cross_entropy_tch::MyModel;
use tch::nn::{self, Module, OptimizerConfig as _};
use tch::{Device, Kind, Tensor};

/// A var store holding one parameter `p`, and the loss `sum(p * g)`, whose
/// gradient is `g`.
fn one_param(p: &[f32]) -> (nn::VarStore, Tensor) {
    let vs = nn::VarStore::new(Device::Cpu);
    let var = vs.root().zeros("p", &[p.len() as i64]);
    tch::no_grad(|| var.shallow_clone().copy_(&Tensor::from_slice(p)));
    (vs, var)
}

fn step_with_grad(opt: &mut Optimizer, var: &Tensor, g: &[f32]) {
    opt.zero_grad();
    (var * Tensor::from_slice(g)).sum(Kind::Float).backward();
    opt.step().unwrap();
}

/// Two Adam steps (with L2 weight decay, then AdamW's decoupled decay)
/// against the formulas in f64. f32 arithmetic over about ten operations:
/// a relative error of a few f32 ulps (1e-6) is the bound.
#[test]
fn adam_and_adamw_steps_match_the_formulas_in_f64() {
    let p0 = [0.5f32, -1.25, 2.0, 0.0];
    let g1 = [0.1f32, -0.3, 1e-3, 0.7];
    let g2 = [-0.2f32, 0.05, 2e-3, 0.7];
    for kind in [OptimizerKind::Adam, OptimizerKind::AdamW] {
        let mut c = OptimizerConfig::new(kind);
        c.lr = 0.01;
        c.betas = (0.9, 0.999);
        c.eps = 1e-8;
        c.weight_decay = 0.1;
        let (vs, var) = one_param(&p0);
        let mut opt = Optimizer::build(&vs, &c).unwrap();
        step_with_grad(&mut opt, &var, &g1);
        step_with_grad(&mut opt, &var, &g2);
        let got = Vec::<f32>::try_from(&var.detach()).unwrap();

        let (lr, b1, b2, eps, wd) = (0.01f64, 0.9f64, 0.999f64, 1e-8f64, 0.1f64);
        for i in 0..p0.len() {
            let (mut p, mut m, mut v) = (p0[i] as f64, 0.0f64, 0.0f64);
            for (t, g) in [(1, g1[i] as f64), (2, g2[i] as f64)] {
                let g = if kind == OptimizerKind::Adam {
                    g + wd * p // L2 penalty in the gradient
                } else {
                    p *= 1.0 - lr * wd; // decoupled decay
                    g
                };
                m = b1 * m + (1.0 - b1) * g;
                v = b2 * v + (1.0 - b2) * g * g;
                let m_hat = m / (1.0 - b1.powi(t));
                let v_hat = v / (1.0 - b2.powi(t));
                p -= lr * m_hat / (v_hat.sqrt() + eps);
            }
            assert_close(got[i] as f64, p, 1e-6, 1e-6, &format!("{kind} p[{i}]"));
        }
    }
}

/// AMSGrad keeps the largest second moment: after a large gradient and a
/// small one, the step uses the large one's v.
#[test]
fn amsgrad_uses_the_largest_second_moment() {
    let mut c = OptimizerConfig::new(OptimizerKind::Adam);
    c.amsgrad = true;
    c.lr = 0.1;
    let (vs, var) = one_param(&[1.0]);
    let mut opt = Optimizer::build(&vs, &c).unwrap();
    step_with_grad(&mut opt, &var, &[10.0]);
    step_with_grad(&mut opt, &var, &[0.1]);
    let got = Vec::<f32>::try_from(&var.detach()).unwrap()[0] as f64;
    let (lr, b1, b2, eps) = (0.1f64, 0.9f64, 0.999f64, 1e-8f64);
    let (mut p, mut m, mut v, mut v_max) = (1.0f64, 0.0, 0.0, 0.0f64);
    for (t, g) in [(1, 10.0f64), (2, 0.1)] {
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        v_max = v_max.max(v);
        p -= lr * (m / (1.0 - b1.powi(t))) / ((v_max / (1.0 - b2.powi(t))).sqrt() + eps);
    }
    assert_close(got, p, 1e-6, 1e-6, "amsgrad");
}

/// Centered RMSprop with momentum, two steps, against the formulas in f64.
#[test]
fn rmsprop_centered_with_momentum_matches_the_formulas_in_f64() {
    let mut c = OptimizerConfig::new(OptimizerKind::RmsProp);
    c.lr = 0.01;
    c.alpha = 0.9;
    c.momentum = 0.5;
    c.centered = true;
    let (vs, var) = one_param(&[0.5, -2.0]);
    let mut opt = Optimizer::build(&vs, &c).unwrap();
    let grads = [[0.3f32, -0.1], [-0.2, 0.4]];
    for g in grads {
        step_with_grad(&mut opt, &var, &g);
    }
    let got = Vec::<f32>::try_from(&var.detach()).unwrap();
    for (i, (&p0, got)) in [0.5f64, -2.0].iter().zip(got).enumerate() {
        let (mut p, mut sq, mut ga, mut buf) = (p0, 0.0f64, 0.0f64, 0.0f64);
        for g in grads {
            let g = g[i] as f64;
            sq = 0.9 * sq + 0.1 * g * g;
            ga = 0.9 * ga + 0.1 * g;
            let avg = (sq - ga * ga).sqrt() + 1e-8;
            buf = 0.5 * buf + g / avg;
            p -= 0.01 * buf;
        }
        assert_close(got as f64, p, 1e-6, 1e-6, &format!("rmsprop p[{i}]"));
    }
}

/// SGD with weight decay and momentum (with dampening, then nesterov),
/// three steps (the first makes the momentum buffer, the next two update
/// it), against the formulas in f64:
///
/// ```python
/// g = g + wd * p
/// buf = g if first else momentum * buf + (1 - dampening) * g
/// p -= lr * (g + momentum * buf if nesterov else buf)
/// ```
#[test]
fn sgd_with_momentum_dampening_nesterov_and_decay_matches_the_formulas_in_f64() {
    let p0 = [0.5f32, -1.25, 2.0];
    let grads = [[0.1f32, -0.3, 0.7], [-0.2, 0.05, 0.7], [0.4, 0.1, -0.6]];
    for (dampening, nesterov) in [(0.25, false), (0.0, true), (0.0, false)] {
        let mut c = OptimizerConfig::new(OptimizerKind::Sgd);
        (c.lr, c.momentum, c.dampening, c.nesterov, c.weight_decay) =
            (0.05, 0.9, dampening, nesterov, 0.01);
        let (vs, var) = one_param(&p0);
        let mut opt = Optimizer::build(&vs, &c).unwrap();
        for g in &grads {
            step_with_grad(&mut opt, &var, g);
        }
        let got = Vec::<f32>::try_from(&var.detach()).unwrap();
        for i in 0..p0.len() {
            let (mut p, mut buf) = (p0[i] as f64, None::<f64>);
            for g in &grads {
                let g = g[i] as f64 + 0.01 * p;
                let b = buf.map_or(g, |b| 0.9 * b + (1.0 - dampening) * g);
                buf = Some(b);
                p -= 0.05 * if nesterov { g + 0.9 * b } else { b };
            }
            let what = format!("sgd dampening {dampening} nesterov {nesterov} p[{i}]");
            assert_close(got[i] as f64, p, 1e-6, 1e-6, &what);
        }
        // The buffer is the optimizer's state, as PyTorch's state_dict has it.
        let state = opt.state().unwrap();
        assert!(state.params.iter().all(|p| p.tensors.iter().any(|(n, _)| n == "momentum_buffer")));
    }
}

/// A step updates the parameters in place, as `torch.optim` does, and so
/// bumps their version counters: a graph that saved a parameter before the
/// step refuses its backward afterwards instead of computing a wrong
/// gradient (the steps run below libtorch's autograd layer and bump the
/// counters themselves, `csrc/below_autograd.h`).
///
/// ```python
/// loss2 = (p * p).sum(); opt.step(); loss2.backward()
/// # RuntimeError: one of the variables needed for gradient computation
/// # has been modified by an inplace operation
/// ```
#[test]
fn a_step_bumps_the_version_of_what_it_updates_in_place() {
    for kind in OptimizerKind::ALL {
        let mut c = OptimizerConfig::new(kind);
        c.momentum =
            if kind == OptimizerKind::Adam || kind == OptimizerKind::AdamW { 0.0 } else { 0.9 };
        let (vs, var) = one_param(&[0.5, -1.0]);
        let mut opt = Optimizer::build(&vs, &c).unwrap();
        step_with_grad(&mut opt, &var, &[0.1, 0.2]);
        let saved = (&var * &var).sum(Kind::Float);
        step_with_grad(&mut opt, &var, &[0.1, 0.2]);
        let err = saved.f_backward().expect_err(&format!("{kind}: backward after a step"));
        assert!(err.to_string().contains("modified by an inplace operation"), "{kind}: {err}");
    }
}

/// The trap: tch's `nn::Adam` (libtorch's C++ Adam) is not
/// `torch.optim.Adam`. After 20 steps of the example's model and batch,
/// its parameters differ from ours in the low bits (ours are PyTorch's,
/// `tests/train.rs`), though both are Adam to 1e-5.
#[test]
fn tchs_adam_differs_from_torch_optim_adam_in_the_low_bits() {
    let _guard = rng_lock();
    let run = |ours: bool| -> Vec<f32> {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = MyModel::new(&vs.root(), 10, 3);
        let x = Tensor::randn([10, 10], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [10], (Kind::Int64, Device::Cpu));
        let mut c = OptimizerConfig::new(OptimizerKind::Adam);
        c.lr = 0.01;
        let mut ours_opt = Optimizer::build(&vs, &c).unwrap();
        let mut tch_opt = nn::Adam::default().build(&vs, 0.01).unwrap();
        for _ in 0..20 {
            let loss = model.forward(&x).cross_entropy_for_logits(&y);
            if ours {
                ours_opt.zero_grad();
                loss.backward();
                ours_opt.step().unwrap();
            } else {
                tch_opt.zero_grad();
                loss.backward();
                tch_opt.step();
            }
        }
        let w = Vec::<f32>::try_from(&model.weight().detach().flatten(0, -1)).unwrap();
        w.into_iter().chain(Vec::<f32>::try_from(&model.bias().detach()).unwrap()).collect()
    };
    let (ours, theirs) = (run(true), run(false));
    let differ = ours.iter().zip(&theirs).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert!(differ > 0, "tch's Adam now matches torch.optim's: update the README's trap");
    for (a, b) in ours.iter().zip(&theirs) {
        assert_close(*a as f64, *b as f64, 1e-4, 1e-3, "both are Adam");
    }
}

/// `init::linear` registers the weight before the bias, as `nn.Linear`
/// does, so the var store lists `model.parameters()`'s order (trap 8).
#[test]
fn parameters_are_listed_in_pytorchs_order() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = MyModel::new(&vs.root(), 10, 3);
    let sizes: Vec<Vec<i64>> = vs.trainable_variables().iter().map(Tensor::size).collect();
    assert_eq!(sizes, [vec![3, 10], vec![3]], "weight, then bias");
}

/// clip_grad_norm_ and clip_grad_value_ on gradients worked by hand: the
/// 1-, 2- and inf-norms of [3, -4] and [12] are 19, 13 and 12.
#[test]
fn clipping_matches_hand_worked_norms() {
    use cross_entropy_tch::optim::{clip_grad_norm_, clip_grad_value_, NormType};
    let params = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = vs.root().zeros("a", &[2]);
        let b = vs.root().zeros("b", &[1]);
        let loss = (&a * Tensor::from_slice(&[3.0f32, -4.0])).sum(Kind::Float)
            + (&b * Tensor::from_slice(&[12.0f32])).sum(Kind::Float);
        loss.backward();
        (vs, vec![a, b])
    };
    let grads = |p: &[Tensor]| -> Vec<f32> {
        p.iter().flat_map(|t| Vec::<f32>::try_from(&t.grad()).unwrap()).collect()
    };
    for (norm_type, total) in [(NormType::One, 19.0), (NormType::Two, 13.0), (NormType::Inf, 12.0)]
    {
        let (_vs, p) = params();
        let got = clip_grad_norm_(&p, 1.0, norm_type).unwrap().double_value(&[]);
        assert_close(got, total, 1e-7, 1.0, &format!("{norm_type}-norm"));
        let scale = 1.0 / (total + 1e-6);
        for (g, want) in grads(&p).iter().zip([3.0, -4.0, 12.0]) {
            assert_close(*g as f64, want * scale, 1e-6, 1e-6, &format!("{norm_type}: clipped"));
        }
        // A max_norm above the norm leaves the gradients alone (coef clamped to 1).
        let (_vs, p) = params();
        let _total = clip_grad_norm_(&p, 100.0, norm_type).unwrap();
        assert_eq!(grads(&p), [3.0, -4.0, 12.0]);
    }
    let (_vs, p) = params();
    clip_grad_value_(&p, 3.5).unwrap();
    assert_eq!(grads(&p), [3.0, -3.5, 3.5]);
    // No gradients yet: nothing to clip, a total of 0.
    let vs = nn::VarStore::new(Device::Cpu);
    let fresh = vec![vs.root().zeros("c", &[2])];
    assert_eq!(clip_grad_norm_(&fresh, 1.0, NormType::Two).unwrap().double_value(&[]), 0.0);
    clip_grad_value_(&fresh, 1.0).unwrap();
}
