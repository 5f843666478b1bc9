//! What the example prints: a human-readable account of the seed's run, or
//! (with `--json`) one JSON document that `scripts/reference.py --json`
//! writes identically from PyTorch.

use crate::device::device_name;
use crate::loss::cross_entropy;
use crate::training::{Params, SeedConfig, SeedRun};
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use tch::{Device, Tensor};

/// The libtorch version this binary was built against (from the libtorch
/// directory itself, see build.rs).
pub const TORCH_VERSION: &str = env!("CE_LIBTORCH_VERSION");

/// The `--json` document. f32 values are serialized as f32, that is with the
/// shortest decimal that reads back as the same f32.
#[derive(Debug, Serialize)]
pub struct Report {
    pub torch_version: String,
    pub device: String,
    pub config: SeedConfig,
    pub initial: ParamsJson,
    pub inputs: Vec<Vec<f32>>,
    pub targets: Vec<i64>,
    pub outputs: Vec<Vec<f32>>,
    pub losses: Vec<f32>,
    pub grad: ParamsJson,
    #[serde(rename = "final")]
    pub final_params: ParamsJson,
}

#[derive(Debug, Serialize)]
pub struct ParamsJson {
    pub weight: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

impl ParamsJson {
    fn of(p: &Params) -> Result<ParamsJson> {
        Ok(ParamsJson { weight: matrix(&p.weight)?, bias: vector(&p.bias)? })
    }
}

impl Report {
    pub fn of(run: &SeedRun) -> Result<Report> {
        Ok(Report {
            torch_version: TORCH_VERSION.to_string(),
            device: device_name(run.device),
            config: run.config,
            initial: ParamsJson::of(&run.initial)?,
            inputs: matrix(&run.inputs)?,
            targets: Vec::<i64>::try_from(&run.targets).context("reading the targets")?,
            outputs: matrix(&run.outputs)?,
            losses: run.losses.clone(),
            grad: ParamsJson::of(&run.grad)?,
            final_params: ParamsJson::of(&run.final_params)?,
        })
    }
}

fn matrix(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Vec::<Vec<f32>>::try_from(t).context("reading a matrix back from libtorch")
}

fn vector(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t).context("reading a vector back from libtorch")
}

/// Writes the `--json` document (and nothing else) to `out`.
pub fn write_json(run: &SeedRun, mut out: impl Write) -> Result<()> {
    serde_json::to_writer(&mut out, &Report::of(run)?)?;
    writeln!(out)?;
    Ok(())
}

/// PyTorch's `print(loss)` for a scalar loss that came out of
/// `nn.CrossEntropyLoss()`: `tensor(1.1429, grad_fn=<NllLossBackward0>)`.
pub fn pytorch_loss_repr(loss: f32) -> String {
    format!("tensor({loss:.4}, grad_fn=<NllLossBackward0>)")
}

/// How many per-step loss lines a long run prints (evenly spaced, plus the last).
pub const MAX_STEP_LINES: usize = 20;

/// Whether step `step` of `steps` gets a line of its own.
pub fn prints_step(step: usize, steps: usize) -> bool {
    let every = steps.div_ceil(MAX_STEP_LINES).max(1);
    step == 1 || step == steps || step.is_multiple_of(every)
}

/// The line printed for one step: PyTorch's `print(loss)` and what it means.
pub fn step_line(step: usize, steps: usize, loss: f32) -> String {
    let width = steps.to_string().len();
    format!(
        "step {step:>width$}/{steps}: print(loss) -> {}   (f32 {loss})",
        pytorch_loss_repr(loss)
    )
}

/// What is about to run, printed before the first step.
pub fn header(config: &SeedConfig, device: Device) -> String {
    let SeedConfig { seed, batch_size: n, input_size, num_classes: c, lr, .. } = *config;
    format!(
        "model:   MyModel(linear=Linear(in_features={input_size}, out_features={c}, bias=True)) on {device}\n\
         optim:   nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr={lr})\n\
         data:    torch.manual_seed({seed}); inputs = torch.randn({n}, {input_size}); targets = torch.randint(0, {c}, ({n},))",
        device = device_name(device),
    )
}

/// The human-readable account printed after the steps: what the loss means,
/// and what the SGD step(s) changed.
pub fn summary(run: &SeedRun) -> Result<String> {
    let SeedConfig { batch_size: n, num_classes: c, lr, steps, .. } = run.config;
    let targets = Vec::<i64>::try_from(&run.targets)?;
    let first = run.losses[0];
    let dw = (&run.final_params.weight - &run.initial.weight).abs();
    let db = (&run.final_params.bias - &run.initial.bias).abs();
    // The loss of the final parameters on the same batch (one extra forward
    // on the CPU copies: nothing random is drawn, nothing else changes).
    let after = tch::no_grad(|| {
        let logits = run.inputs.linear(&run.final_params.weight, Some(&run.final_params.bias));
        cross_entropy(&logits, &run.targets).double_value(&[])
    });
    let updates =
        if steps == 1 { "one SGD step".to_string() } else { format!("{steps} SGD steps") };
    Ok(format!(
        "targets: {targets:?}\n\
         loss:    step 1: the mean over the {n} rows of -log softmax(outputs)[target] = {first}\n\
         \x20        (a model that guesses uniformly scores ln {c} = {uniform:.4})\n\
         update:  {updates} with lr = {lr}: weight moved by at most {dw_max:.3e} (mean {dw_mean:.3e}), bias by at most {db_max:.3e}\n\
         after:   the loss on the same batch is now {after:.6} ({delta:+.6})",
        uniform = (c as f64).ln(),
        dw_max = dw.max().double_value(&[]),
        dw_mean = dw.mean(None).double_value(&[]),
        db_max = db.max().double_value(&[]),
        delta = after - first as f64,
    ))
}
