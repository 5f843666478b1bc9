//! What the example prints: a human-readable account of the seed's run, or
//! (with `--json`) one JSON document that `scripts/reference.py --json`
//! writes identically from PyTorch.

use crate::device::device_name;
use crate::loss::cross_entropy;
use crate::seed::{Params, SeedConfig, SeedRun};
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

/// An output file written all at once. [`create`](Self::create) proves,
/// when the run starts, that a temporary file can be made next to the final
/// path (and removes it again), so an unwritable path fails before any work
/// and an interrupted run leaves nothing. [`commit`](Self::commit) writes
/// the temporary file and renames it into place, so no reader ever sees a
/// truncated file; if that fails, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Checks that `path` can be written, by creating its temporary file now.
    /// `flag` names the option in error messages (`--save`).
    pub fn create(path: &std::path::Path, flag: &str) -> Result<AtomicFile> {
        let shown = path.display();
        if path.is_dir() {
            anyhow::bail!("{flag} {shown}: is a directory, expected a file path");
        }
        let name = path
            .file_name()
            .with_context(|| format!("{flag} {shown}: expected a file path"))?
            .to_string_lossy();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        std::fs::File::create(&tmp)
            .with_context(|| format!("{flag} {shown}: cannot write in {}", dir.display()))?;
        let _ = std::fs::remove_file(&tmp);
        Ok(AtomicFile { path: path.to_path_buf(), tmp, committed: false })
    }

    /// Writes `bytes` to the temporary file, flushes it to disk and renames
    /// it to the final path.
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let shown = self.path.display().to_string();
        let mut f = std::fs::File::create(&self.tmp).with_context(|| format!("writing {shown}"))?;
        f.write_all(bytes).with_context(|| format!("writing {shown}"))?;
        f.sync_all().with_context(|| format!("writing {shown}"))?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("writing {shown}"))?;
        self.committed = true;
        Ok(())
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

// ------------------------------------------------------------ training --

use crate::training::{DataSummary, EpochMetrics, EvalRun, TrainConfig, TrainRun};

/// Per-epoch progress on stderr: a bar on a terminal, plain lines (at most
/// about [`MAX_STEP_LINES`] of them) otherwise, nothing with `--quiet`.
pub struct Progress {
    epochs: usize,
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(epochs: usize, quiet: bool, terminal: bool) -> Progress {
        let bar = (!quiet && terminal).then(|| {
            let bar = indicatif::ProgressBar::new(epochs as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("epoch {pos:>5}/{len} [{bar:30}] {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Progress { epochs, quiet, bar }
    }

    pub fn epoch(&mut self, m: &EpochMetrics) {
        let line = epoch_line(m, self.epochs);
        match &self.bar {
            Some(bar) => {
                bar.set_position(m.epoch as u64);
                bar.set_message(
                    line.split_once(": ").map_or(line.clone(), |(_, rest)| rest.to_string()),
                );
            }
            None if !self.quiet && prints_step(m.epoch, self.epochs) => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `epoch  20/200: train loss 0.1234 acc 0.967 | test loss 0.2345 acc 0.933`
pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let width = epochs.to_string().len();
    format!(
        "epoch {:>width$}/{epochs}: train loss {:.4} acc {:.3} | test loss {:.4} acc {:.3}",
        m.epoch, m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy
    )
}

/// The `--metrics-csv` file.
pub fn metrics_csv(run: &TrainRun) -> String {
    let mut s = String::from("epoch,train_loss,train_accuracy,test_loss,test_accuracy\n");
    for m in &run.epochs {
        s += &format!(
            "{},{},{},{},{}\n",
            m.epoch, m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy
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
}

impl<'a> TrainReport<'a> {
    pub fn of(run: &'a TrainRun) -> TrainReport<'a> {
        TrainReport {
            torch_version: TORCH_VERSION,
            device: device_name(run.device),
            config: &run.config,
            data: &run.data,
            epochs: &run.epochs,
            final_metrics: run.last(),
            confusion_matrix: &run.confusion,
            train_seconds: run.seconds,
            samples_per_second: run.samples_per_second(),
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
            torch_version: TORCH_VERSION,
            device: device_name(run.device),
            data: &run.data,
            loss: run.loss,
            accuracy: run.accuracy,
            confusion_matrix: &run.confusion,
        }
    }
}

/// The confusion matrix as a table, rows the true classes.
pub fn confusion_table(m: &[Vec<i64>]) -> String {
    let width = m
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1)
        .max(m.len().to_string().len())
        + 2;
    let mut s = format!("{:>8}", "true\\pred");
    for c in 0..m.len() {
        s += &format!("{c:>width$}");
    }
    for (t, row) in m.iter().enumerate() {
        s += &format!("\n{t:>9}");
        for v in row {
            s += &format!("{v:>width$}");
        }
    }
    s
}

/// The human-readable account of a training run.
pub fn train_summary(run: &TrainRun, written: &[String]) -> String {
    let (c, d) = (&run.config, &run.data);
    let m = run.last();
    let batch = match c.batch_size {
        Some(b) if b < d.train_rows => format!("mini-batches of {b}, reshuffled each epoch"),
        _ => "full batch".to_string(),
    };
    let mut optim = format!("SGD lr {}", c.lr);
    for (name, v) in
        [("momentum", c.momentum), ("dampening", c.dampening), ("weight_decay", c.weight_decay)]
    {
        if v != 0.0 {
            optim += &format!(", {name} {v}");
        }
    }
    if c.nesterov {
        optim += ", nesterov";
    }
    let mut loss = Vec::new();
    if let Some(w) = &c.class_weights {
        loss.push(format!("weight={w:?}"));
    }
    if c.label_smoothing != 0.0 {
        loss.push(format!("label_smoothing={}", c.label_smoothing));
    }
    let mut s = format!(
        "data:      {} ({} rows, {} features, {} classes): {} train, {} test, {}\n\
         model:     MyModel(linear=Linear(in_features={}, out_features={}, bias=True)) on {}\n\
         training:  {} epochs, {batch}, {optim}, nn.CrossEntropyLoss({}), seed {}\n\
         final:     train loss {:.4} accuracy {:.3} | test loss {:.4} accuracy {:.3}\n\
         speed:     {:.0} samples/s ({:.2} s for {} epochs)\n\
         confusion matrix of the test split (rows: true class, columns: predicted):\n{}",
        d.name,
        d.rows,
        d.features,
        d.classes,
        d.train_rows,
        d.test_rows,
        if c.standardize { "standardized" } else { "raw features" },
        d.features,
        d.classes,
        device_name(run.device),
        run.epochs.len(),
        loss.join(", "),
        c.seed,
        m.train_loss,
        m.train_accuracy,
        m.test_loss,
        m.test_accuracy,
        run.samples_per_second(),
        run.seconds,
        run.epochs.len(),
        confusion_table(&run.confusion),
    );
    if !written.is_empty() {
        s += &format!("\nwrote:     {}", written.join(", "));
    }
    s
}

/// The human-readable account of an evaluation.
pub fn eval_summary(run: &EvalRun) -> String {
    let d = &run.data;
    format!(
        "data:      {} ({} rows, {} features, {} classes) on {}\n\
         result:    loss {:.4} accuracy {:.3} ({} of {} right)\n\
         confusion matrix (rows: true class, columns: predicted):\n{}",
        d.name,
        d.rows,
        d.features,
        d.classes,
        device_name(run.device),
        run.loss,
        run.accuracy,
        run.confusion.iter().enumerate().map(|(i, r)| r[i]).sum::<i64>(),
        d.rows,
        confusion_table(&run.confusion),
    )
}
