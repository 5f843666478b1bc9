//! The seed's step in a timed loop: what `scripts/bench.sh` measures against
//! PyTorch's identical loop (`scripts/reference.py bench`).

use crate::loss::cross_entropy;
use crate::model::MyModel;
use crate::seed::{SeedConfig, SeedSetup};
use anyhow::Result;
use serde::Serialize;
use tch::nn::Module;
use tch::{Device, Kind, Tensor};

/// How the timed step computes its gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backward {
    /// `optimizer.zero_grad(); loss.backward(); optimizer.step()`: the
    /// seed's lines, through libtorch's autograd engine.
    Autograd,
    /// The same ATen kernels that autograd runs for this graph, called
    /// directly (see [`ManualStep`]): the same numbers, bit for bit, without
    /// the engine's per-call cost.
    Manual,
}

/// What one timed run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub implementation: &'static str,
    pub device: String,
    pub threads: i32,
    pub batch_size: i64,
    pub input_size: i64,
    pub num_classes: i64,
    pub warmup: usize,
    pub steps: usize,
    pub backward: Backward,
    /// Wall time of the timed steps (warm-up excluded), per step.
    pub us_per_step: f64,
    /// The loss on the batch after the last step (one extra forward, not
    /// timed): equal to PyTorch's bit for bit on the CPU.
    pub final_loss: f32,
}

/// Runs `warmup + steps` seed steps (forward, loss, zero_grad, backward,
/// step) on one batch, timing the last `steps`, from the seed's
/// initialization (`config.seed`, CPU draws, then moved to `device`).
pub fn bench_seed_step(
    config: &SeedConfig,
    warmup: usize,
    backward: Backward,
    device: Device,
) -> Result<BenchResult> {
    let &SeedConfig { batch_size, steps, .. } = config;
    let SeedSetup { vs: _vs, model, mut optimizer, inputs, targets } =
        SeedSetup::new(config)?.to_device(device)?;
    let manual = ManualStep::new(&model, batch_size)?;
    let step = || match backward {
        Backward::Autograd => {
            let outputs = model.forward(&inputs);
            let loss = cross_entropy(&outputs, &targets);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
        }
        Backward::Manual => {
            manual.gradients(&model, &inputs, &targets);
            optimizer.step();
        }
    };
    let us_per_step = time_loop(warmup, steps, device, step);
    let final_loss =
        tch::no_grad(|| cross_entropy(&model.forward(&inputs), &targets).f_double_value(&[]))?
            as f32;
    Ok(BenchResult::new("tch", config, warmup, backward, device, us_per_step, final_loss))
}

fn sync(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// Times only the two matrix multiplies of a step at this shape (forward
/// `x W^T` and the weight gradient `g^T x`), for comparing the whole step
/// with libtorch's GEMM throughput. `final_loss` is 0.
pub fn bench_gemms(config: &SeedConfig, warmup: usize, device: Device) -> Result<BenchResult> {
    let &SeedConfig { seed, batch_size, input_size, num_classes, steps, .. } = config;
    tch::manual_seed(seed);
    let opts = (Kind::Float, device);
    let x = Tensor::f_randn([batch_size, input_size], opts)?;
    let w = Tensor::f_randn([num_classes, input_size], opts)?;
    let g = Tensor::f_randn([batch_size, num_classes], opts)?;
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
        config: &SeedConfig,
        warmup: usize,
        backward: Backward,
        device: Device,
        us_per_step: f64,
        final_loss: f32,
    ) -> BenchResult {
        BenchResult {
            implementation,
            device: crate::device::device_name(device),
            threads: tch::get_num_threads(),
            batch_size: config.batch_size,
            input_size: config.input_size,
            num_classes: config.num_classes,
            warmup,
            steps: config.steps,
            backward,
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

/// The seed's backward pass without the autograd engine: the ATen kernels
/// that autograd runs for `cross_entropy(linear(x, W, b), y)` (mean
/// reduction, no class weights), called in the same order with the same
/// arguments, writing the gradients into `W.grad` and `b.grad` for
/// `optimizer.step()`:
///
/// - `NllLossBackward0`: `nll_loss_backward(1, log_p, y, None, Mean, -100, N)`;
/// - `LogSoftmaxBackward0`: `_log_softmax_backward_data(g, log_p, 1, Float)`;
/// - `AddmmBackward0` + `TBackward0` for `W`: `g.t().mm(x)` (autograd's
///   `mm_mat2_backward` picks this form for `W.t()`'s strides);
/// - the broadcast bias: `sum_to(g, [C])`, that is `g.sum([0], keepdim=true)`.
///
/// So the gradients, and the parameters after `optimizer.step()`, are bit for
/// bit those of `loss.backward()` (tested in `tests/bench.rs`). Never call
/// `optimizer.zero_grad()` in between: it would drop the gradient buffers.
pub struct ManualStep {
    weight_grad: Tensor,
    bias_grad: Tensor,
    /// `total_weight` of `nll_loss_forward`: the number of targets.
    total_weight: Tensor,
}

impl ManualStep {
    /// Creates zero gradients for the model's parameters (one backward of
    /// `0 * (sum W + sum b)`), which later steps overwrite in place.
    pub fn new(model: &MyModel, batch_size: i64) -> Result<ManualStep> {
        let (w, b) = (model.weight(), model.bias());
        (w.f_sum(Kind::Float)? * 0.0 + b.f_sum(Kind::Float)? * 0.0).f_backward()?;
        let total_weight = Tensor::from(batch_size as f32).f_to_device(w.device())?;
        Ok(ManualStep { weight_grad: w.grad(), bias_grad: b.grad(), total_weight })
    }

    /// Forward and backward of the seed's step, into the gradient buffers.
    pub fn gradients(&self, model: &MyModel, inputs: &Tensor, targets: &Tensor) {
        tch::no_grad(|| {
            let outputs = model.forward(inputs);
            let log_p = outputs.log_softmax(-1, Kind::Float);
            let loss = log_p.nll_loss(targets);
            let g = log_p.nll_loss_backward(
                &loss.ones_like(),
                targets,
                None::<Tensor>,
                tch::Reduction::Mean,
                -100,
                &self.total_weight,
            );
            let g = Tensor::internal_log_softmax_backward_data(&g, &log_p, 1, Kind::Float);
            let _ = g.tr().mm_out(&self.weight_grad, inputs);
            let bias_grad = self.bias_grad.view([1, -1]);
            let _ = g.sum_intlist_out(&bias_grad, [0i64].as_slice(), true, None::<Kind>);
        });
    }
}
