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

/// Whether libtorch sees a GPU; if not, says so (the test then skips).
fn gpu_or_skip() -> bool {
    let gpu = Cuda::is_available();
    if !gpu {
        skip("libtorch sees no CUDA device on this machine (no GPU or no driver)");
    }
    gpu
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    assert!(a.numel() > 0, "nothing to compare");
    (a - b).abs().max().double_value(&[])
}

/// Prints a measured CPU-against-CUDA difference past libtest's capture, so
/// the device report (`scripts/gpu-check.sh`) shows what the bounds leave.
fn measured(what: &str, d: f64) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "MEASURED {what}: largest |cpu - cuda| {d:.3e}");
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
        measured(&format!("example {what}"), d);
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
    if !gpu_or_skip() {
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
    if !gpu_or_skip() {
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
        // Relative: the Sum reduction adds 18 losses into 61.95
        // (measured on an H200: 7.6e-6 absolute, 1.2e-7 relative).
        let d = max_abs_diff(&cpu_loss, &gpu_loss.to_device(Device::Cpu));
        let scale = cpu_loss.abs().max().double_value(&[]).max(1.0);
        assert!(d <= 1e-5 * scale, "{red:?}: CUDA differs from CPU by {d:e}");
        measured(&format!("loss {red:?}"), d);
        // The gradient with respect to the logits, through each reduction.
        let grad_of = |device: Device| {
            // detach: on the CPU `to_device` returns `x` itself, which must stay a
            // leaf without grad for the other device's run.
            let xs = x.to_device(device).detach().set_requires_grad(true);
            let loss = CrossEntropyLoss::new()
                .weight(w.to_device(device))
                .label_smoothing(0.1)
                .reduction(red)
                .forward(&xs, &t.to_device(device));
            loss.sum(Kind::Float).backward();
            xs.grad().to_device(Device::Cpu)
        };
        let (gc, gg) = (grad_of(Device::Cpu), grad_of(gpu));
        assert_eq!(gc.size(), gg.size(), "{red:?}: gradient shapes");
        assert_eq!(gc.size(), x.size(), "{red:?}: one gradient per logit");
        assert!(gc.abs().sum(Kind::Double).double_value(&[]) > 0.0, "{red:?}: a zero gradient");
        let d = max_abs_diff(&gc, &gg);
        assert!(d <= 1e-5, "{red:?}: the CUDA gradient differs from the CPU's by {d:e}");
        measured(&format!("loss gradient {red:?}"), d);
    }
    // Targets or weights left on the CPU: PyTorch raises "Expected all tensors
    // to be on the same device"; we say which tensor, before libtorch runs.
    let on_gpu = x.to_device(gpu);
    let err = CrossEntropyLoss::new().f_forward(&on_gpu, &t).unwrap_err();
    assert_eq!(err.to_string(), "target is on Cpu but the input is on Cuda(0)");
    let err = CrossEntropyLoss::new().weight(w.copy()).f_forward(&on_gpu, &t.to_device(gpu));
    assert_eq!(err.unwrap_err().to_string(), "weight is on Cpu but the input is on Cuda(0)");
    // On CUDA an out-of-range class index would be a device-side assert that
    // kills the process; f_forward must catch it first.
    let bad = Tensor::from_slice(&[0i64, 7]).to_device(gpu);
    let logits = Tensor::zeros([2, 4], (Kind::Float, gpu));
    let err = CrossEntropyLoss::new().f_forward(&logits, &bad).unwrap_err();
    assert!(err.to_string().contains("target 7 at [1] is out of bounds"), "{err}");
}

#[test]
fn training_on_cuda_matches_cpu_within_1e_5() {
    use cross_entropy_tch::data::{Bundled, Dataset};
    use cross_entropy_tch::training::{train, TrainConfig};
    if !gpu_or_skip() {
        return;
    }
    let _rng = rng_lock();
    // Split, standardization and init are drawn on the CPU in both runs; the
    // steps' sums differ in order on the GPU, and 200 epochs of SGD carry
    // that f32 round-off forward. Measured on an H200 (scripts/gpu-check.sh):
    // at most 1.5e-7 on any epoch's loss; 1e-5 leaves room for other GPUs.
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
        let mut worst = 0f64;
        for (a, b) in cpu.epochs.iter().zip(&gpu.epochs) {
            for (x, y) in [(a.train_loss, b.train_loss), (a.test_loss, b.test_loss)] {
                assert!((x - y).abs() <= 1e-5, "{which}: epoch {}: cpu {x}, cuda {y}", a.epoch);
                worst = worst.max((x - y).abs() as f64);
            }
        }
        measured(&format!("train {which}, {} epochs, losses", config.epochs), worst);
    }
}

/// DDP on NCCL: `train --nproc 1 --device cuda` (one rank on `cuda:0`, its
/// gradients through c10d's ProcessGroupNCCL, its metrics through gloo)
/// against the same job with `--device cpu` (gloo alone): every epoch's
/// losses and the saved weights within 1e-5, the bound and the reason of
/// `training_on_cuda_matches_cpu_within_1e_5`. Two ranks need two GPUs
/// (NCCL refuses two ranks on one), so on a one-GPU machine this is all of
/// NCCL that runs.
#[test]
fn ddp_on_nccl_matches_the_cpu_within_1e_5() {
    use cross_entropy_tch::checkpoint::Checkpoint;
    if !gpu_or_skip() {
        return;
    }
    // Not CARGO_TARGET_TMPDIR: this test binary also runs on the device
    // machine, away from its build tree (scripts/gpu-check.sh).
    let dir = std::env::temp_dir().join(format!("ce-cuda-ddp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut docs = Vec::new();
    for device in ["cpu", "cuda"] {
        let file = dir.join(format!("{device}.safetensors"));
        let out = common::bin()
            .args(["train", "--json", "--quiet", "--nproc", "1", "--device", device])
            .args(["--dataset", "wine", "--epochs", "20", "--batch-size", "16"])
            .args(["--momentum", "0.9", "--save", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        docs.push((doc, Checkpoint::read(&file).unwrap()));
    }
    let ((cpu, cpu_ck), (gpu, gpu_ck)) = (&docs[0], &docs[1]);
    assert!(gpu["device"].as_str().unwrap().starts_with("cuda"), "{}", gpu["device"]);
    let mut worst = 0f64;
    for (a, b) in cpu["epochs"].as_array().unwrap().iter().zip(gpu["epochs"].as_array().unwrap()) {
        for key in ["train_loss", "test_loss"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5, "epoch {}: {key}: cpu {x}, cuda {y}", a["epoch"]);
            worst = worst.max((x - y).abs());
        }
    }
    for (a, b) in cpu_ck.layers.iter().zip(&gpu_ck.layers) {
        for (x, y) in a.weight.iter().chain(&a.bias).zip(b.weight.iter().chain(&b.bias)) {
            assert!((x - y).abs() <= 1e-5, "weights: cpu {x}, cuda {y}");
            worst = worst.max((x - y).abs() as f64);
        }
    }
    measured("train --nproc 1 on NCCL, 20 epochs, losses and weights", worst);
}

/// A GPU the driver sees must be one libtorch sees: otherwise every test
/// here would skip on a GPU machine with a CPU-only libtorch, and pass.
#[test]
fn a_gpu_the_driver_sees_is_one_libtorch_sees() {
    let listed = match std::process::Command::new("nvidia-smi").arg("-L").output() {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("GPU ")).count()
        }
        _ => {
            skip("nvidia-smi does not answer: no NVIDIA driver on this machine");
            return;
        }
    };
    assert!(listed > 0, "nvidia-smi answers but lists no GPU");
    assert!(
        Cuda::is_available(),
        "nvidia-smi lists {listed} GPU(s) but libtorch sees none (a CPU-only libtorch?)"
    );
    assert_eq!(Cuda::device_count() as usize, listed, "libtorch and the driver disagree");
}

/// `--device auto` is `cuda:0` when there is a GPU; `cuda` is `cuda:0`; one
/// past the last GPU is refused with the count.
#[test]
fn device_requests_resolve_to_the_gpus_there_are() {
    use cross_entropy_tch::device::{DeviceError, DeviceRequest};
    if !gpu_or_skip() {
        return;
    }
    let count = Cuda::device_count() as usize;
    let resolve = |s: &str| s.parse::<DeviceRequest>().unwrap().resolve();
    assert_eq!(resolve("auto"), Ok(Device::Cuda(0)));
    assert_eq!(resolve("cuda"), Ok(Device::Cuda(0)));
    assert_eq!(resolve(&format!("cuda:{}", count - 1)), Ok(Device::Cuda(count - 1)));
    assert_eq!(resolve(&format!("cuda:{count}")), Err(DeviceError::NoSuchCuda { count }));
    assert_eq!(resolve("cpu"), Ok(Device::Cpu));
}

/// A checkpoint written by a CUDA run loads on the CPU, and one written by a
/// CPU run loads on CUDA: through the file's bytes, evaluated on both.
#[test]
fn checkpoints_move_between_cuda_and_cpu() {
    use cross_entropy_tch::checkpoint::Checkpoint;
    use cross_entropy_tch::data::{Bundled, Dataset};
    use cross_entropy_tch::training::{eval, train, TrainConfig};
    if !gpu_or_skip() {
        return;
    }
    let _rng = rng_lock();
    let data = Dataset::bundled(Bundled::Wine).unwrap();
    let config = TrainConfig { epochs: 30, hidden: vec![16], ..TrainConfig::default() };
    for trained_on in [Device::Cuda(0), Device::Cpu] {
        let run = train(&data, &config, trained_on, None, |_| {}).unwrap();
        let bytes = run.checkpoint().to_bytes().unwrap();
        let ck = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(&ck, run.checkpoint(), "the file holds what the run ended with");
        let on_cpu = eval(&data, &ck, true, Device::Cpu).unwrap();
        let on_gpu = eval(&data, &ck, true, Device::Cuda(0)).unwrap();
        assert_eq!(on_gpu.device, Device::Cuda(0));
        assert_eq!(on_cpu.data.rows, data.rows);
        assert!(on_cpu.accuracy > 0.9, "trained on {trained_on:?}: accuracy {}", on_cpu.accuracy);
        assert_eq!(on_cpu.confusion, on_gpu.confusion, "trained on {trained_on:?}");
        let d = (on_cpu.loss - on_gpu.loss).abs() as f64;
        assert!(
            d <= 1e-5,
            "trained on {trained_on:?}: eval loss cpu {}, cuda {}",
            on_cpu.loss,
            on_gpu.loss
        );
        measured(&format!("eval loss of a checkpoint trained on {trained_on:?}"), d);
    }
}

/// `ManualStep` on CUDA against `loss.backward()` on CUDA: the same kernels
/// on the same device, so the same bits are expected (on the CPU they are,
/// tests/bench.rs). Until this has passed on a GPU, `train` takes the fast
/// step on the CPU only.
#[test]
fn the_manual_step_on_cuda_matches_autograd_on_cuda() {
    use cross_entropy_tch::{ManualStep, MyModel};
    use tch::nn::{self, Module};
    use tch::Kind;
    if !gpu_or_skip() {
        return;
    }
    let _rng = rng_lock();
    let gpu = Device::Cuda(0);
    for (n, d, c, weighted) in [(10i64, 10i64, 3i64, false), (256, 784, 10, true), (33, 5, 8, true)]
    {
        tch::manual_seed(n);
        let x = Tensor::randn([n, d], (Kind::Float, Device::Cpu)).to_device(gpu);
        let y = Tensor::randint(c, [n], (Kind::Int64, Device::Cpu)).to_device(gpu);
        let loss_fn = if weighted {
            let w = Tensor::rand([c], (Kind::Float, Device::Cpu)) + 0.5;
            cross_entropy_tch::CrossEntropyLoss::new().weight(w.to_device(gpu))
        } else {
            cross_entropy_tch::CrossEntropyLoss::new()
        };
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = MyModel::new(&vs.root(), d, c);
        vs.set_device(gpu);
        let loss = loss_fn.forward(&model.forward(&x), &y);
        loss.backward();
        let (gw, gb) = (model.weight().grad().copy(), model.bias().grad().copy());
        let manual = ManualStep::new(&model).unwrap();
        let manual_loss = manual.f_step(&model, &loss_fn, &x, &y).unwrap();
        let bits = |t: &Tensor| {
            let v = Vec::<f32>::try_from(&t.to_device(Device::Cpu).flatten(0, -1)).unwrap();
            v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        assert_eq!(bits(&loss), bits(&manual_loss), "{n}x{d}->{c}: loss");
        assert_eq!(bits(&gw), bits(&model.weight().grad()), "{n}x{d}->{c}: weight gradient");
        assert_eq!(bits(&gb), bits(&model.bias().grad()), "{n}x{d}->{c}: bias gradient");
    }
}
