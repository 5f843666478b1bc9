//! Where the seed step's time goes: times cumulative pieces of the step
//! (forward, loss, backward, zero_grad + SGD step) at the seed's shape.
//!
//!     source scripts/env.sh && cargo run --release --example step_profile [STEPS]
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::MyModel;
use std::time::Instant;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn time(name: &str, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..steps / 10 {
        f();
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..steps {
            f();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / steps as f64);
    }
    println!("{name:<46} {best:8.2} us");
    best
}

fn main() {
    let steps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20000);
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = MyModel::new(&vs.root(), 10, 3);
    let mut opt = nn::Sgd::default().build(&vs, 0.01).unwrap();
    let x = Tensor::randn([10, 10], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(3, [10], (Kind::Int64, Device::Cpu));
    let (w, b) = (model.weight().shallow_clone(), model.bias().shallow_clone());

    time("forward (no_grad)", steps, || {
        tch::no_grad(|| model.forward(&x));
    });
    time("forward", steps, || {
        model.forward(&x);
    });
    time("forward + cross_entropy_for_logits", steps, || {
        cross_entropy(&model.forward(&x), &y);
    });
    time("forward + cross_entropy_loss", steps, || {
        model.forward(&x).cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0);
    });
    time("forward + loss + backward", steps, || {
        cross_entropy(&model.forward(&x), &y).backward();
    });
    time("zero_grad alone", steps, || opt.zero_grad());
    time("step alone (no grads: skipped)", steps, || opt.step());
    time("full step: optimizer zero_grad/backward/step", steps, || {
        let loss = cross_entropy(&model.forward(&x), &y);
        opt.zero_grad();
        loss.backward();
        opt.step();
    });
    time("full step: backward_step", steps, || {
        opt.backward_step(&cross_entropy(&model.forward(&x), &y));
    });
    time("full step: manual p.add_(grad, -lr), grads reset", steps, || {
        let loss = cross_entropy(&model.forward(&x), &y);
        for p in [&w, &b] {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss.backward();
        tch::no_grad(|| {
            for p in [&w, &b] {
                let _ = p.shallow_clone().g_add_(&(p.grad() * -0.01));
            }
        });
    });

    // The autograd-free step: the very ATen ops autograd runs for this graph.
    let (wg, bg) = {
        // Define the grads once (zeros) so the optimizer finds them.
        (w.sum(Kind::Float) * 0.0 + b.sum(Kind::Float) * 0.0).backward();
        (w.grad(), b.grad())
    };
    let n_valid = Tensor::from(10f32);
    time("manual backward, SGD via optimizer.step", steps, || {
        tch::no_grad(|| {
            let logits = x.linear(&w, Some(&b));
            let logp = logits.log_softmax(-1, Kind::Float);
            let loss = logp.nll_loss(&y);
            let g_logp = logp.nll_loss_backward(
                &loss.ones_like(),
                &y,
                None::<Tensor>,
                tch::Reduction::Mean,
                -100,
                &n_valid,
            );
            let g = Tensor::internal_log_softmax_backward_data(&g_logp, &logp, 1, Kind::Float);
            let _ = g.tr().mm_out(&wg, &x);
            let _ = g.sum_intlist_out(&bg, [0i64].as_slice(), false, None::<Kind>);
        });
        opt.step();
    });
}
