//! Criterion benchmarks of the example's step, for developers:
//! `source scripts/env.sh && cargo bench --bench step`.
//! (`scripts/bench.sh` is the comparison with PyTorch.)
use criterion::{criterion_group, criterion_main, Criterion};
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::ManualStep;
use cross_entropy_tch::MyModel;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn seed_step(c: &mut Criterion) {
    tch::set_num_threads(1);
    for (n, d, k) in [(10i64, 10i64, 3i64), (256, 784, 10)] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = MyModel::new(&vs.root(), d, k);
        let mut opt = nn::Sgd::default().build(&vs, 0.01).unwrap();
        let x = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(k, [n], (Kind::Int64, Device::Cpu));
        c.bench_function(&format!("seed step, autograd, {n}x{d}->{k}"), |b| {
            b.iter(|| {
                let loss = cross_entropy(&model.forward(&x), &y);
                opt.zero_grad();
                loss.backward();
                opt.step();
            })
        });
        let manual = ManualStep::new(&model).unwrap();
        c.bench_function(&format!("seed step, manual backward, {n}x{d}->{k}"), |b| {
            b.iter(|| {
                manual.gradients(&model, &x, &y);
                opt.step();
            })
        });
    }
}

criterion_group!(benches, seed_step);
criterion_main!(benches);
