//! `bench`: the example's step in a timed loop, what `scripts/bench.sh`
//! measures against PyTorch's identical loop (`scripts/reference.py bench`).

use super::report::BenchResult;
use anyhow::Result;
use cross_entropy_tch::amp::{self, AmpDtype, GradScaler, GradScalerConfig};
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
/// With `amp`, the forward and the loss run under autocast (the final loss
/// too), and fp16 steps through a GradScaler with PyTorch's defaults, as
/// `train --amp` does; the manual backward is f32 only (the CLI refuses
/// the mix before this runs).
pub fn bench_example_step(
    config: &ExampleConfig,
    warmup: usize,
    backward: Backward,
    kind: OptimizerKind,
    amp: Option<AmpDtype>,
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
    // scaler = torch.amp.GradScaler(device.type), for fp16.
    let mut scaler = match amp {
        Some(dtype) if dtype.needs_scaler() => {
            Some(GradScaler::new(device, GradScalerConfig::default())?)
        }
        _ => None,
    };
    let params = vs.trainable_variables();
    // outputs = model(inputs); loss = loss_fn(outputs, targets), under
    // `with torch.autocast(device.type, dtype):` where there is one.
    let region = amp.map(|dtype| (device, dtype));
    let forward = || -> Result<Tensor> {
        Ok(amp::autocast_if(region, || cross_entropy(&model.forward(&inputs), &targets))?)
    };
    let manual = ManualStep::new(&model)?;
    let mut step = || -> Result<()> {
        match backward {
            Backward::Autograd => {
                let loss = forward()?;
                optimizer.zero_grad();
                match &scaler {
                    Some(s) => s.scale(&loss)?.f_backward()?,
                    None => loss.f_backward()?,
                }
            }
            Backward::Manual => manual.gradients(&model, &inputs, &targets),
        }
        match &mut scaler {
            // scaler.step(optimizer); scaler.update()
            Some(s) => {
                s.step(&mut optimizer, &params)?;
                s.update()?;
            }
            None => optimizer.step()?,
        }
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
        tch::no_grad(|| -> Result<f64> { Ok(forward()?.f_double_value(&[])?) })? as f32;
    let mut result =
        BenchResult::new("tch", config, warmup, backward, device, us_per_step, final_loss);
    result.optimizer = kind.torch_name();
    result.amp = amp.map(AmpDtype::name);
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
/// With `amp`, the three operands are in that dtype (what autocast hands the
/// matrix multiplies), for comparing with the card's bf16/fp16 peak.
pub fn bench_gemms(
    config: &ExampleConfig,
    warmup: usize,
    amp: Option<AmpDtype>,
    device: Device,
) -> Result<BenchResult> {
    let &ExampleConfig { seed, batch_size, features, classes, steps, .. } = config;
    tch::manual_seed(seed);
    let kind = amp.map_or(Kind::Float, AmpDtype::kind);
    let draw = |shape: [i64; 2]| -> Result<Tensor> {
        Ok(Tensor::f_randn(shape, (Kind::Float, device))?.f_to_kind(kind)?)
    };
    let x = draw([batch_size, features])?;
    let w = draw([classes, features])?;
    let g = draw([batch_size, classes])?;
    let step = || {
        let _ = x.mm(&w.tr());
        let _ = g.tr().mm(&x);
    };
    let us_per_step = time_loop(warmup, steps, device, step);
    let mut result =
        BenchResult::new("tch-gemms", config, warmup, Backward::Manual, device, us_per_step, 0.0);
    result.amp = amp.map(AmpDtype::name);
    Ok(result)
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
            amp: None,
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
