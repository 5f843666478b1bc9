//! What programs read: the `--json` documents (the example's is the one
//! `scripts/reference.py --json` writes from PyTorch; `bench`'s is the one
//! `scripts/bench.py` reads) and the `--metrics-csv` file.

use anyhow::{Context, Result};
use cross_entropy_tch::device::device_name;
use cross_entropy_tch::example::{ExampleConfig, ExampleRun, Params};
use cross_entropy_tch::step::Backward;
use cross_entropy_tch::training::{DataSummary, EpochMetrics, EvalRun, TrainConfig, TrainRun};
use cross_entropy_tch::LIBTORCH_VERSION;
use serde::Serialize;
use tch::Tensor;

/// The `--json` document. f32 values are serialized as f32, that is with the
/// shortest decimal that reads back as the same f32.
#[derive(Debug, Serialize)]
pub struct Report {
    pub torch_version: String,
    pub device: String,
    pub config: ExampleConfig,
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
    pub fn of(run: &ExampleRun) -> Result<Report> {
        Ok(Report {
            torch_version: LIBTORCH_VERSION.to_string(),
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

/// The `--metrics-csv` file.
pub fn metrics_csv(run: &TrainRun) -> String {
    let mut s = String::from("epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy\n");
    for m in &run.epochs {
        s += &format!(
            "{},{},{},{},{},{}\n",
            m.epoch, m.lr, m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy
        );
    }
    s
}

/// The `train --json` document.
#[derive(Debug, Serialize)]
pub struct TrainReport<'a> {
    pub torch_version: &'a str,
    pub device: String,
    pub config: &'a TrainConfig,
    pub data: &'a DataSummary,
    pub epochs: &'a [EpochMetrics],
    #[serde(rename = "final")]
    pub final_metrics: &'a EpochMetrics,
    /// On the test split: `[true class][predicted class]`.
    pub confusion_matrix: &'a [Vec<i64>],
    pub train_seconds: f64,
    pub samples_per_second: f64,
    /// The saved epoch a `--resume` run continued after (`epochs` holds
    /// the ones after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<usize>,
    /// Which backward pass the steps ran: `manual` (the exact fast step) or
    /// `autograd`.
    pub backward: Backward,
    /// The ranks that trained it (`--nproc`, torchrun); 1 in one process.
    pub world_size: usize,
    /// With `--amp fp16`: the steps the GradScaler skipped (inf/NaN
    /// gradients) in this run's epochs, and its scale after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_scale: Option<f64>,
}

impl<'a> TrainReport<'a> {
    pub fn of(run: &'a TrainRun) -> TrainReport<'a> {
        TrainReport {
            torch_version: LIBTORCH_VERSION,
            device: device_name(run.device),
            config: &run.config,
            data: &run.data,
            epochs: &run.epochs,
            final_metrics: run.last(),
            confusion_matrix: &run.confusion,
            train_seconds: run.seconds,
            samples_per_second: run.samples_per_second(),
            resumed_after: run.resumed_after,
            backward: run.backward,
            world_size: run.world_size,
            skipped_steps: run.state.scaler.map(|_| run.skipped_steps),
            grad_scale: run.state.scaler.map(|s| s.scale),
        }
    }
}

/// The `eval --json` document.
#[derive(Debug, Serialize)]
pub struct EvalReport<'a> {
    pub torch_version: &'a str,
    pub device: String,
    pub data: &'a DataSummary,
    pub loss: f32,
    pub accuracy: f64,
    pub confusion_matrix: &'a [Vec<i64>],
}

impl<'a> EvalReport<'a> {
    pub fn of(run: &'a EvalRun) -> EvalReport<'a> {
        EvalReport {
            torch_version: LIBTORCH_VERSION,
            device: device_name(run.device),
            data: &run.data,
            loss: run.loss,
            accuracy: run.accuracy,
            confusion_matrix: &run.confusion,
        }
    }
}

/// What one timed run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub implementation: &'static str,
    pub device: String,
    pub threads: i32,
    pub batch_size: i64,
    pub features: i64,
    pub classes: i64,
    pub warmup: usize,
    pub steps: usize,
    pub backward: Backward,
    /// `torch.optim`'s class the step used.
    pub optimizer: &'static str,
    /// The autocast dtype (bf16, fp16), null for f32.
    pub amp: Option<&'static str>,
    /// Wall time of the timed steps (warm-up excluded), per step.
    pub us_per_step: f64,
    /// The loss on the batch after the last step (one extra forward, not
    /// timed): equal to PyTorch's bit for bit on the CPU.
    pub final_loss: f32,
}
