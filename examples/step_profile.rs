//! Where the example step's time goes: times cumulative pieces of the step at
//! the example's shape (10, 10 -> 3), one thread, best of 5 runs.
//!
//!     source scripts/env.sh && cargo run --release --example step_profile [STEPS]
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::ManualStep;
use cross_entropy_tch::MyModel;
use std::hint::black_box;
use std::time::Instant;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn time(name: &str, steps: usize, mut f: impl FnMut()) {
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
    println!("{name:<52} {best:8.2} us");
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

    time("forward (no_grad)", steps, || {
        let _ = black_box(tch::no_grad(|| model.forward(&x)));
    });
    time("forward (recording the graph)", steps, || {
        let _ = black_box(model.forward(&x));
    });
    time("forward + loss", steps, || {
        let _ = black_box(cross_entropy(&model.forward(&x), &y));
    });
    time("forward + loss + backward (autograd engine)", steps, || {
        cross_entropy(&model.forward(&x), &y).backward();
    });
    time("the example's step: zero_grad, backward, step", steps, || {
        let loss = cross_entropy(&model.forward(&x), &y);
        opt.zero_grad();
        loss.backward();
        opt.step();
    });
    let manual = ManualStep::new(&model).unwrap();
    time("forward + loss + manual backward (ManualStep)", steps, || {
        manual.gradients(&model, &x, &y);
    });
    time("ManualStep + optimizer.step()", steps, || {
        manual.gradients(&model, &x, &y);
        opt.step();
    });
}
