//! `bench`: the example's step in a timed loop, what `scripts/bench.sh`
//! measures against PyTorch's identical loop (`scripts/reference.py bench`).

use super::report::BenchResult;
use anyhow::Result;
use cross_entropy_tch::example::{ExampleConfig, ExampleSetup};
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use cross_entropy_tch::step::Backward;
use cross_entropy_tch::ManualStep;
use tch::nn::Module;
use tch::{Device, Kind, Tensor};

/// Runs `warmup + steps` example steps (forward, loss, zero_grad, backward,
/// step) on one batch, timing the last `steps`, from the example's
/// initialization (`config.seed`, CPU draws, then moved to `device`).
pub fn bench_example_step(
    config: &ExampleConfig,
    warmup: usize,
    backward: Backward,
    kind: OptimizerKind,
    device: Device,
) -> Result<BenchResult> {
    let &ExampleConfig { steps, lr, .. } = config;
    let ExampleSetup { vs, model, optimizer: sgd, inputs, targets } =
        ExampleSetup::new(config)?.to_device(device)?;
    // The example's SGD (libtorch's), or this crate's exact optimizers.
    let mut optimizer = match kind {
        OptimizerKind::Sgd => Optimizer::Tch(sgd, lr),
        _ => Optimizer::build(&vs, &OptimizerConfig { lr, ..OptimizerConfig::new(kind) })?,
    };
    let manual = ManualStep::new(&model)?;
    let mut step = || -> Result<()> {
        match backward {
            Backward::Autograd => {
                let outputs = model.forward(&inputs);
                let loss = cross_entropy(&outputs, &targets);
                optimizer.zero_grad();
                loss.backward();
            }
            Backward::Manual => manual.gradients(&model, &inputs, &targets),
        }
        optimizer.step()?;
        Ok(())
    };
    let mut failed = None;
    let us_per_step = time_loop(warmup, steps, device, || {
        if failed.is_none() {
            failed = step().err();
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let final_loss =
        tch::no_grad(|| cross_entropy(&model.forward(&inputs), &targets).f_double_value(&[]))?
            as f32;
    let mut result =
        BenchResult::new("tch", config, warmup, backward, device, us_per_step, final_loss);
    result.optimizer = kind.torch_name();
    Ok(result)
}

fn sync(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// Times only the two matrix multiplies of a step at this shape (forward
/// `x W^T` and the weight gradient `g^T x`), for comparing the whole step
/// with libtorch's GEMM throughput. `final_loss` is 0.
pub fn bench_gemms(config: &ExampleConfig, warmup: usize, device: Device) -> Result<BenchResult> {
    let &ExampleConfig { seed, batch_size, features, classes, steps, .. } = config;
    tch::manual_seed(seed);
    let opts = (Kind::Float, device);
    let x = Tensor::f_randn([batch_size, features], opts)?;
    let w = Tensor::f_randn([classes, features], opts)?;
    let g = Tensor::f_randn([batch_size, classes], opts)?;
    let step = || {
        let _ = x.mm(&w.tr());
        let _ = g.tr().mm(&x);
    };
    let us_per_step = time_loop(warmup, steps, device, step);
    Ok(BenchResult::new("tch-gemms", config, warmup, Backward::Manual, device, us_per_step, 0.0))
}

impl BenchResult {
    fn new(
        implementation: &'static str,
        config: &ExampleConfig,
        warmup: usize,
        backward: Backward,
        device: Device,
        us_per_step: f64,
        final_loss: f32,
    ) -> BenchResult {
        BenchResult {
            implementation,
            device: cross_entropy_tch::device::device_name(device),
            threads: tch::get_num_threads(),
            batch_size: config.batch_size,
            features: config.features,
            classes: config.classes,
            warmup,
            steps: config.steps,
            backward,
            optimizer: "SGD",
            us_per_step,
            final_loss,
        }
    }
}

/// Runs `step` `warmup` times untimed, then `steps` times timed (waiting
/// for the GPU at both ends); returns microseconds per timed step.
fn time_loop(warmup: usize, steps: usize, device: Device, mut step: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        step();
    }
    sync(device);
    let start = std::time::Instant::now();
    for _ in 0..steps {
        step();
    }
    sync(device);
    start.elapsed().as_secs_f64() * 1e6 / steps.max(1) as f64
}
