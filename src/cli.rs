//! The command line. With no subcommand it runs the seed, whose constants
//! are flags with the seed's values as defaults; `train` and `eval` work on
//! real data.

use crate::checkpoint::Checkpoint;
use crate::data::{Bundled, Dataset};
use crate::device::DeviceRequest;
use crate::output::{self, AtomicFile};
use crate::seed::{run_seed, SeedConfig};
use crate::training::{train, TrainConfig};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// Runs PyTorch's classic cross-entropy example, ported line by line to Rust
/// on tch (libtorch): MyModel (one nn.Linear), nn.CrossEntropyLoss(),
/// torch.optim.SGD, inputs = torch.randn(...), targets = torch.randint(...);
/// forward, print(loss), zero_grad, backward, step. With the same seed it
/// computes the same numbers as PyTorch, bit for bit on the CPU.
///
/// `train` trains the same model on real data (iris, wine, digits or a CSV
/// file); `eval` evaluates a saved model.
#[derive(Debug, Parser)]
#[command(name = "cross-entropy-tch", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub seed: SeedArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train MyModel (softmax regression: one nn.Linear, nn.CrossEntropyLoss,
    /// torch.optim.SGD) on a data set, reporting loss and accuracy per epoch.
    Train(TrainArgs),
    /// Evaluate a saved model (--load FILE.safetensors) on a whole data set:
    /// accuracy and confusion matrix.
    Eval(EvalArgs),
    /// Time the seed's step (forward, loss, zero_grad, backward, step) in a
    /// loop, as scripts/bench.sh does against PyTorch.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The seed's shapes, learning rate and seed; --steps is the number of
    /// timed steps.
    #[command(flatten)]
    pub seed: SeedArgs,

    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,

    /// How gradients are computed: autograd (the seed's loss.backward()) or
    /// manual (the same ATen kernels called directly, bit-equal, faster).
    #[arg(long, value_enum, default_value = "autograd")]
    pub backward: crate::bench::Backward,

    /// Time only the step's two matrix multiplies (forward and weight
    /// gradient), to compare the step with libtorch's GEMM throughput.
    #[arg(long)]
    pub gemm_only: bool,
}

/// Flags every command has.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Where model and data live: cpu, cuda (that is cuda:0), cuda:N, or auto
    /// (cuda:0 when libtorch sees a GPU, else cpu). Random numbers are always
    /// drawn on the CPU and then moved, so every device starts from the same
    /// numbers.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,

    /// libtorch's intra-op threads (torch.set_num_threads); libtorch's
    /// default (one per core) when not given.
    #[arg(long, value_parser = at_least::<i32, 1>, allow_negative_numbers = true)]
    pub threads: Option<i32>,

    /// Print one JSON document and nothing else on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The seed's flags.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// torch.manual_seed(SEED), called before the model is built.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: i64,

    /// The 10 rows in inputs = torch.randn(10, 10) and
    /// targets = torch.randint(0, 3, (10,)).
    #[arg(long, default_value_t = 10, value_parser = at_least::<i64, 1>, allow_negative_numbers = true)]
    pub batch_size: i64,

    /// input_size of MyModel(input_size, output_size), the features per row
    /// (the second 10 in torch.randn(10, 10)).
    #[arg(long, default_value_t = 10, value_parser = at_least::<i64, 1>, allow_negative_numbers = true)]
    pub input_size: i64,

    /// output_size of MyModel(input_size, output_size), the number of classes
    /// (the 3 in torch.randint(0, 3, (10,))); at least 2.
    #[arg(long, default_value_t = 3, value_parser = at_least::<i64, 2>, allow_negative_numbers = true)]
    pub num_classes: i64,

    /// lr of torch.optim.SGD(model.parameters(), lr=0.01); finite and >= 0.
    #[arg(long, default_value_t = 0.01, value_parser = parse_lr, allow_negative_numbers = true)]
    pub lr: f64,

    /// How many times to run forward, loss, zero_grad, backward and step on
    /// the same inputs (the seed runs them once).
    #[arg(long, default_value_t = 1, value_parser = at_least::<u64, 1>, allow_negative_numbers = true)]
    pub steps: u64,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Which data: a bundled data set or a CSV file.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// A data set compiled into the binary (see data/SOURCES.md).
    #[arg(long, value_enum, required_unless_present = "data", conflicts_with = "data")]
    pub dataset: Option<Bundled>,

    /// A CSV file: numeric feature columns, then an integer class label
    /// (0, 1, 2, ...) in the last column; a header line is detected and
    /// skipped.
    #[arg(long, value_name = "FILE.csv")]
    pub data: Option<PathBuf>,
}

impl DataArgs {
    fn load(&self) -> Result<Dataset> {
        let data = match (&self.dataset, &self.data) {
            (Some(which), _) => Dataset::bundled(*which),
            (None, Some(path)) => Dataset::from_csv(path),
            (None, None) => bail!("give --dataset or --data"),
        };
        data.map_err(|e| UsageError(format!("{e:#}")).into())
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// torch.manual_seed(SEED), called before the train/test split.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: i64,

    /// The share of rows held out for testing (rounded up), in (0, 1).
    #[arg(long, default_value_t = 0.2, value_parser = parse_fraction, allow_negative_numbers = true)]
    pub test_fraction: f64,

    /// Passes over the training split.
    #[arg(long, default_value_t = 200, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub epochs: usize,

    /// Rows per SGD step, reshuffled every epoch; the whole training split
    /// (one step per epoch, no shuffling) when not given.
    #[arg(long, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,

    /// torch.optim.SGD(lr=...); finite and >= 0.
    #[arg(long, default_value_t = 0.5, value_parser = parse_lr, allow_negative_numbers = true)]
    pub lr: f64,

    /// torch.optim.SGD(momentum=...); >= 0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub momentum: f64,

    /// torch.optim.SGD(dampening=...) of the momentum; >= 0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub dampening: f64,

    /// torch.optim.SGD(weight_decay=...), L2 penalty; >= 0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub weight_decay: f64,

    /// torch.optim.SGD(nesterov=True); needs --momentum > 0 and --dampening 0.
    #[arg(long)]
    pub nesterov: bool,

    /// nn.CrossEntropyLoss(label_smoothing=...), in [0, 1].
    #[arg(long, default_value_t = 0.0, value_parser = parse_unit, allow_negative_numbers = true)]
    pub label_smoothing: f64,

    /// nn.CrossEntropyLoss(weight=...): one value >= 0 per class, comma
    /// separated, e.g. 1,2,0.5.
    #[arg(long, value_delimiter = ',', value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub class_weights: Option<Vec<f64>>,

    /// Use the raw features instead of z-scores (mean and std of the
    /// training split).
    #[arg(long)]
    pub no_standardize: bool,

    /// Start from a saved model (and its standardization) instead of a fresh
    /// nn.Linear init.
    #[arg(long, value_name = "FILE.safetensors")]
    pub load: Option<PathBuf>,

    /// Save the trained model: safetensors with linear.weight and
    /// linear.bias (MyModel's state_dict() names) and the standardization
    /// statistics as metadata.
    #[arg(long, value_name = "FILE.safetensors")]
    pub save: Option<PathBuf>,

    /// Write the per-epoch metrics as CSV.
    #[arg(long, value_name = "FILE.csv")]
    pub metrics_csv: Option<PathBuf>,

    /// Draw the loss and accuracy curves (train and test) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// No progress output on stderr.
    #[arg(long)]
    pub quiet: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// The saved model (from train --save, or PyTorch's
    /// safetensors.torch.save_file(model.state_dict(), ...)).
    #[arg(long, value_name = "FILE.safetensors")]
    pub load: PathBuf,

    /// Use the raw features: for a model trained without standardization.
    #[arg(long)]
    pub no_standardize: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// An integer flag that must be at least `MIN`.
fn at_least<T, const MIN: i64>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + TryFrom<i64> + PartialOrd,
{
    let min = T::try_from(MIN).map_err(|_| "bad minimum".to_string())?;
    match s.trim().parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        Ok(_) => Err(format!("must be at least {MIN}, got {s}")),
        Err(_) if s.trim().parse::<i128>().is_ok_and(|v| v < MIN as i128) => {
            Err(format!("must be at least {MIN}, got {s}"))
        }
        Err(_) => Err(format!(
            "expected a whole number of at least {MIN} that fits in {}, got '{s}'",
            std::any::type_name::<T>()
        )),
    }
}

fn parse_finite(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() {
        return Err(format!("must be a finite number, got {s}"));
    }
    Ok(v)
}

fn parse_lr(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if v >= 0.0 => Ok(v),
        _ => Err(format!("the learning rate must be finite and >= 0, got {s}")),
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if v >= 0.0 => Ok(v),
        _ => Err(format!("must be a finite number >= 0, got {s}")),
    }
}

fn parse_unit(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be between 0 and 1, got {s}")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("must be between 0 and 1 (exclusive), got {s}")),
    }
}

/// An error in what the user asked for (exit status 2), as opposed to a
/// failure while doing it (exit status 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The largest tensor the seed agrees to allocate, in elements (4 GiB of f32).
const MAX_ELEMENTS: i64 = 1 << 30;

impl SeedArgs {
    /// The seed's config these flags describe.
    pub fn config(&self) -> Result<SeedConfig> {
        let sizes = [
            ("--batch-size x --input-size (inputs)", self.batch_size.checked_mul(self.input_size)),
            (
                "--input-size x --num-classes (weight)",
                self.input_size.checked_mul(self.num_classes),
            ),
            (
                "--batch-size x --num-classes (logits)",
                self.batch_size.checked_mul(self.num_classes),
            ),
        ];
        for (what, elements) in sizes {
            if elements.is_none_or(|e| e > MAX_ELEMENTS) {
                bail!(UsageError(format!(
                    "{what} is over {MAX_ELEMENTS} elements; use smaller sizes"
                )));
            }
        }
        Ok(SeedConfig {
            seed: self.seed,
            batch_size: self.batch_size,
            input_size: self.input_size,
            num_classes: self.num_classes,
            lr: self.lr,
            steps: self.steps as usize,
        })
    }
}

impl TrainArgs {
    /// The training config these flags describe.
    pub fn config(&self) -> Result<TrainConfig> {
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            bail!(UsageError(format!(
                "--nesterov needs --momentum > 0 and --dampening 0 (got {} and {}), as torch.optim.SGD does",
                self.momentum, self.dampening
            )));
        }
        Ok(TrainConfig {
            seed: self.seed,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            label_smoothing: self.label_smoothing,
            class_weights: self.class_weights.clone(),
            test_fraction: self.test_fraction,
            standardize: !self.no_standardize,
        })
    }
}

impl CommonArgs {
    /// Resolves the device and applies --threads.
    fn apply(&self) -> Result<tch::Device> {
        let device = self.device.resolve().map_err(|e| UsageError(e.to_string()))?;
        if let Some(threads) = self.threads {
            tch::set_num_threads(threads);
        }
        Ok(device)
    }
}

/// Runs what the flags ask for, printing to stdout.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        None => run_seed_command(&cli.seed),
        Some(Command::Train(args)) => run_train(args),
        Some(Command::Eval(args)) => run_eval(args),
        Some(Command::Bench(args)) => run_bench(args),
    }
}

fn run_bench(args: &BenchArgs) -> Result<()> {
    let config = args.seed.config()?;
    let device = args.seed.common.apply()?;
    let result = if args.gemm_only {
        crate::bench::bench_gemms(&config, args.warmup, device)?
    } else {
        crate::bench::bench_seed_step(&config, args.warmup, args.backward, device)?
    };
    let mut out = std::io::stdout().lock();
    if args.seed.common.json {
        serde_json::to_writer(&mut out, &result)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} steps ({:?} backward) of ({}, {} -> {}) on {} with {} thread(s): {:.2} us/step; loss after: {}",
            result.steps,
            result.backward,
            result.batch_size,
            result.input_size,
            result.num_classes,
            result.device,
            result.threads,
            result.us_per_step,
            result.final_loss
        )?;
    }
    Ok(())
}

fn run_seed_command(args: &SeedArgs) -> Result<()> {
    let config = args.config()?;
    let device = args.common.apply()?;
    let json = args.common.json;
    let stdout = std::io::stdout();
    if !json {
        writeln!(stdout.lock(), "{}", output::header(&config, device))
            .context("writing to stdout")?;
    }
    let steps = config.steps;
    let run = run_seed(&config, device, |step, loss| {
        if !json && output::prints_step(step, steps) {
            // A closed stdout is not worth failing the run for.
            let _ = writeln!(stdout.lock(), "{}", output::step_line(step, steps, loss));
        }
    })?;
    let mut out = stdout.lock();
    if json {
        output::write_json(&run, &mut out).context("writing the JSON to stdout")?;
    } else {
        writeln!(out, "{}", output::summary(&run)?).context("writing to stdout")?;
    }
    Ok(())
}

fn load_checkpoint(path: &std::path::Path) -> Result<Checkpoint> {
    Checkpoint::load(path).map_err(|e| UsageError(format!("{e:#}")).into())
}

fn run_train(args: &TrainArgs) -> Result<()> {
    let config = args.config()?;
    let device = args.common.apply()?;
    let data = args.data.load()?;
    let init = args.load.as_deref().map(load_checkpoint).transpose()?;
    crate::training::check_train(&data, &config, init.as_ref())
        .map_err(|e| UsageError(format!("{e:#}")))?;
    // Every output path is checked (a temporary file made and removed next
    // to it) before training starts.
    let save = args.save.as_deref().map(|p| AtomicFile::create(p, "--save")).transpose()?;
    let csv =
        args.metrics_csv.as_deref().map(|p| AtomicFile::create(p, "--metrics-csv")).transpose()?;
    let plot = args.plot.as_deref().map(|p| AtomicFile::create(p, "--plot")).transpose()?;

    let mut progress =
        output::Progress::new(config.epochs, args.quiet, std::io::stderr().is_terminal());
    let run = train(&data, &config, device, init.as_ref(), |m| progress.epoch(m));
    progress.finish();
    let run = run?;

    let mut written = Vec::new();
    if let Some(file) = plot {
        written.push(file.path().display().to_string());
        file.commit(crate::plot::training_curves_svg(&run)?.as_bytes())?;
    }
    if let Some(file) = csv {
        written.push(file.path().display().to_string());
        file.commit(output::metrics_csv(&run).as_bytes())?;
    }
    if let Some(file) = save {
        written.push(file.path().display().to_string());
        run.checkpoint.save(file)?;
    }
    let mut out = std::io::stdout().lock();
    if args.common.json {
        serde_json::to_writer(&mut out, &output::TrainReport::of(&run))?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", output::train_summary(&run, &written)).context("writing to stdout")?;
    }
    Ok(())
}

fn run_eval(args: &EvalArgs) -> Result<()> {
    let device = args.common.apply()?;
    let data = args.data.load()?;
    let ck = load_checkpoint(&args.load)?;
    let run = crate::training::eval(&data, &ck, !args.no_standardize, device)
        .map_err(|e| UsageError(format!("--load {}: {e:#}", args.load.display())))?;
    let mut out = std::io::stdout().lock();
    if args.common.json {
        serde_json::to_writer(&mut out, &output::EvalReport::of(&run))?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", output::eval_summary(&run)).context("writing to stdout")?;
    }
    Ok(())
}
