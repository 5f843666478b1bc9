//! The example on CUDA against the example on the CPU. Runs when libtorch sees a
//! GPU, and skips with a printed reason otherwise.
//!
//! Tolerance 1e-5: inputs, targets and initial parameters are drawn on the
//! CPU and moved, so they are bit-equal; the logits, loss and gradients come
//! from cuBLAS and CUDA kernels that sum in another order than the CPU ones
//! (f32 round-off of order 1e-7 relative per sum; TF32 is off for f32
//! matmuls by default in libtorch), which is what 1e-5 leaves room for.

mod common;

use common::{rng_lock, skip};
use cross_entropy_tch::example::{run_example, ExampleConfig, ExampleRun};
use cross_entropy_tch::optim::{OptimizerConfig, OptimizerKind};
use tch::{Cuda, Device, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn assert_close_runs(cpu: &ExampleRun, gpu: &ExampleRun) {
    let exact = [
        ("initial.weight", &cpu.initial.weight, &gpu.initial.weight),
        ("initial.bias", &cpu.initial.bias, &gpu.initial.bias),
        ("inputs", &cpu.inputs, &gpu.inputs),
    ];
    for (what, a, b) in exact {
        assert_eq!(max_abs_diff(a, b), 0.0, "{what} must be bit-equal");
    }
    assert!(cpu.targets.equal(&gpu.targets), "targets must be equal");
    let close = [
        ("outputs", &cpu.outputs, &gpu.outputs),
        ("grad.weight", &cpu.grad.weight, &gpu.grad.weight),
        ("grad.bias", &cpu.grad.bias, &gpu.grad.bias),
        ("final.weight", &cpu.final_params.weight, &gpu.final_params.weight),
        ("final.bias", &cpu.final_params.bias, &gpu.final_params.bias),
    ];
    for (what, a, b) in close {
        let d = max_abs_diff(a, b);
        assert!(d <= 1e-5, "{what}: CUDA differs from CPU by {d:e}");
    }
    assert_eq!(cpu.losses.len(), gpu.losses.len(), "one loss per step on both");
    assert!(!cpu.losses.is_empty(), "no step ran");
    for (step, (a, b)) in cpu.losses.iter().zip(&gpu.losses).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "loss of step {}: cpu {a}, cuda {b}",
            step + 1
        );
    }
}

#[test]
fn cuda_run_matches_cpu_run() {
    if !Cuda::is_available() {
        skip("libtorch sees no CUDA device on this machine (no GPU or no driver)");
        return;
    }
    let _rng = rng_lock();
    for config in [
        ExampleConfig::default(),
        ExampleConfig { seed: 5, batch_size: 256, features: 784, classes: 10, lr: 0.1, steps: 20 },
    ] {
        let cpu = run_example(&config, Device::Cpu, |_, _| {}).unwrap();
        let gpu = run_example(&config, Device::Cuda(0), |_, _| {}).unwrap();
        assert_eq!(gpu.device, Device::Cuda(0));
        assert_close_runs(&cpu, &gpu);
    }
}

#[test]
fn cross_entropy_loss_on_cuda_matches_cpu_and_catches_bad_targets() {
    use cross_entropy_tch::{CrossEntropyLoss, Reduction};
    use tch::Kind;
    if !Cuda::is_available() {
        skip("libtorch sees no CUDA device on this machine (no GPU or no driver)");
        return;
    }
    let _rng = rng_lock();
    tch::manual_seed(1);
    let x = Tensor::randn([6, 4, 3], (Kind::Float, Device::Cpu));
    let t = Tensor::randint(4, [6, 3], (Kind::Int64, Device::Cpu));
    let w = Tensor::from_slice(&[0.5f32, 2.0, 1.0, 3.0]);
    let gpu = Device::Cuda(0);
    for red in [Reduction::None, Reduction::Mean, Reduction::Sum] {
        let cpu_loss = CrossEntropyLoss::new()
            .weight(w.copy())
            .label_smoothing(0.1)
            .reduction(red)
            .forward(&x, &t);
        let gpu_loss = CrossEntropyLoss::new()
            .weight(w.to_device(gpu))
            .label_smoothing(0.1)
            .reduction(red)
            .forward(&x.to_device(gpu), &t.to_device(gpu));
        let d = max_abs_diff(&cpu_loss, &gpu_loss.to_device(Device::Cpu));
        assert!(d <= 1e-5, "{red:?}: CUDA differs from CPU by {d:e}");
    }
    // On CUDA an out-of-range class index would be a device-side assert that
    // kills the process; f_forward must catch it first.
    let bad = Tensor::from_slice(&[0i64, 7]).to_device(gpu);
    let logits = Tensor::zeros([2, 4], (Kind::Float, gpu));
    let err = CrossEntropyLoss::new().f_forward(&logits, &bad).unwrap_err();
    assert!(err.to_string().contains("target 7 at [1] is out of bounds"), "{err}");
}

#[test]
fn training_on_cuda_matches_cpu_within_1e_4() {
    use cross_entropy_tch::data::{Bundled, Dataset};
    use cross_entropy_tch::training::{train, TrainConfig};
    if !Cuda::is_available() {
        skip("libtorch sees no CUDA device on this machine (no GPU or no driver)");
        return;
    }
    let _rng = rng_lock();
    // Split, standardization and init are drawn on the CPU in both runs; the
    // steps' sums differ in order on the GPU, and 200 epochs of SGD carry
    // that f32 round-off forward: 1e-4 on the losses leaves room for it.
    for (which, config) in [
        (Bundled::Iris, TrainConfig::default()),
        (
            Bundled::Wine,
            TrainConfig {
                batch_size: Some(16),
                optimizer: OptimizerConfig { momentum: 0.9, ..OptimizerConfig::default() },
                epochs: 50,
                ..TrainConfig::default()
            },
        ),
        (
            Bundled::Wine,
            TrainConfig {
                batch_size: Some(16),
                optimizer: OptimizerConfig {
                    lr: 0.01,
                    ..OptimizerConfig::new(OptimizerKind::Adam)
                },
                clip_grad_norm: Some(1.0),
                epochs: 50,
                ..TrainConfig::default()
            },
        ),
    ] {
        let data = Dataset::bundled(which).unwrap();
        let cpu = train(&data, &config, Device::Cpu, None, |_| {}).unwrap();
        let gpu = train(&data, &config, Device::Cuda(0), None, |_| {}).unwrap();
        assert_eq!(cpu.epochs.len(), gpu.epochs.len(), "{which}: epochs on both");
        assert_eq!(cpu.epochs.len(), config.epochs, "{which}: every epoch ran");
        for (a, b) in cpu.epochs.iter().zip(&gpu.epochs) {
            for (x, y) in [(a.train_loss, b.train_loss), (a.test_loss, b.test_loss)] {
                assert!((x - y).abs() <= 1e-4, "{which}: epoch {}: cpu {x}, cuda {y}", a.epoch);
            }
        }
    }
}
