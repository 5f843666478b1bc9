//! The flags: clap's definitions and the parsers of single values. Every
//! default comes from the library's `Default` impls (written once, there).
//! Turning these into the library's configs, with the checks that span
//! several flags, is `config.rs`'s job.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use cross_entropy_tch::amp::AmpDtype;
use cross_entropy_tch::data::Bundled;
use cross_entropy_tch::device::DeviceRequest;
use cross_entropy_tch::optim::{NormType, OptimizerConfig, OptimizerKind};
use cross_entropy_tch::step::Backward;
use cross_entropy_tch::{ExampleConfig, TrainConfig};
use std::path::PathBuf;

/// `--version`: the crate's and the libtorch it was built for.
const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (built for libtorch ", env!("CE_LIBTORCH_VERSION"), ")");

/// Runs PyTorch's classic cross-entropy example, ported line by line to Rust
/// on tch (libtorch): MyModel (one nn.Linear), nn.CrossEntropyLoss(),
/// torch.optim.SGD, inputs = torch.randn(...), targets = torch.randint(...);
/// forward, print(loss), zero_grad, backward, step. With the same seed it
/// computes the same numbers as PyTorch, bit for bit on the CPU.
///
/// `train` trains the same model on real data (iris, wine, digits or a CSV
/// file); `eval` evaluates a saved model; `bench` times the step.
#[derive(Debug, Parser)]
#[command(name = "cross-entropy-tch", version = VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub example: ExampleArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train MyModel (softmax regression: one nn.Linear, nn.CrossEntropyLoss,
    /// torch.optim.SGD, Adam, AdamW or RMSprop) on a data set, reporting
    /// loss and accuracy per epoch.
    Train(Box<TrainArgs>),
    /// Evaluate a saved model (--load FILE.safetensors) on a whole data set:
    /// accuracy and confusion matrix.
    Eval(EvalArgs),
    /// Time the example's step (forward, loss, zero_grad, backward, step) in
    /// a loop, as scripts/bench.sh does against PyTorch.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The example's shapes, learning rate and seed; --steps is the number
    /// of timed steps.
    #[command(flatten)]
    pub example: ExampleArgs,

    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,

    /// How gradients are computed: autograd (the example's loss.backward())
    /// or manual (the same ATen kernels called directly, bit-equal, faster).
    #[arg(long, default_value_t = Backward::Autograd, value_parser = backward())]
    pub backward: Backward,

    /// Time only the step's two matrix multiplies (forward and weight
    /// gradient), to compare the step with libtorch's GEMM throughput.
    #[arg(long)]
    pub gemm_only: bool,

    /// The step's optimizer, with --lr and torch.optim's other defaults:
    /// sgd (the example's) or this crate's exact adam, adamw, rmsprop.
    #[arg(long, default_value_t = OptimizerKind::Sgd, value_parser = optimizer_kind())]
    pub optimizer: OptimizerKind,

    /// Mixed precision, as `train --amp`: the forward and loss under
    /// `torch.autocast(device.type, dtype)`, fp16 with torch.amp.GradScaler's
    /// defaults; with --gemm-only, the two matrix multiplies in that dtype.
    /// Needs --backward autograd.
    #[arg(long, value_name = "DTYPE", value_parser = amp_dtype())]
    pub amp: Option<AmpDtype>,
}

/// Flags every command has.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Where model and data live: cpu, cuda (that is cuda:0), cuda:N, or auto
    /// (cuda:0 when libtorch sees a GPU, else cpu). Random numbers are always
    /// drawn on the CPU and then moved, so every device starts from the same
    /// numbers.
    #[arg(long, default_value_t = DeviceRequest::default())]
    pub device: DeviceRequest,

    /// libtorch's intra-op threads (torch.set_num_threads); libtorch's
    /// default (one per core) when not given.
    #[arg(long, value_parser = at_least::<i32, 1>, allow_negative_numbers = true)]
    pub threads: Option<i32>,

    /// Print one JSON document and nothing else on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The example's flags: its constants, with the example's values as defaults.
#[derive(Debug, Args)]
pub struct ExampleArgs {
    /// torch.manual_seed(SEED), called before the model is built.
    #[arg(long, default_value_t = ExampleConfig::default().seed, allow_negative_numbers = true)]
    pub seed: i64,

    /// The 10 rows in inputs = torch.randn(10, 10) and
    /// targets = torch.randint(0, 3, (10,)).
    #[arg(long, default_value_t = ExampleConfig::default().batch_size, value_parser = at_least::<i64, 1>, allow_negative_numbers = true)]
    pub batch_size: i64,

    /// The features per row: input_size of MyModel(input_size, output_size)
    /// (the second 10 in torch.randn(10, 10)).
    #[arg(long, default_value_t = ExampleConfig::default().features, value_parser = at_least::<i64, 1>, allow_negative_numbers = true)]
    pub features: i64,

    /// The number of classes: output_size of MyModel(input_size, output_size)
    /// (the 3 in torch.randint(0, 3, (10,))); at least 2.
    #[arg(long, default_value_t = ExampleConfig::default().classes, value_parser = at_least::<i64, 2>, allow_negative_numbers = true)]
    pub classes: i64,

    /// lr of torch.optim.SGD(model.parameters(), lr=0.01); finite and >= 0.
    #[arg(long, default_value_t = ExampleConfig::default().lr, value_parser = parse_lr, allow_negative_numbers = true)]
    pub lr: f64,

    /// How many times to run forward, loss, zero_grad, backward and step on
    /// the same inputs (the example runs them once).
    #[arg(long, default_value_t = ExampleConfig::default().steps, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub steps: usize,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Which data: a bundled data set or a CSV file.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// A data set compiled into the binary (see data/SOURCES.md).
    #[arg(long, value_parser = bundled(), required_unless_present = "data", conflicts_with = "data")]
    pub dataset: Option<Bundled>,

    /// A CSV file: numeric feature columns, then an integer class label
    /// (0, 1, 2, ...) in the last column; a header line is detected and
    /// skipped.
    #[arg(long, value_name = "FILE.csv")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// torch.manual_seed(SEED), called before the train/test split.
    #[arg(long, default_value_t = TrainConfig::default().seed, allow_negative_numbers = true)]
    pub seed: i64,

    /// The share of rows held out for testing (rounded up), in (0, 1).
    #[arg(long, default_value_t = TrainConfig::default().test_fraction, value_parser = parse_fraction, allow_negative_numbers = true)]
    pub test_fraction: f64,

    /// Passes over the training split.
    #[arg(long, default_value_t = TrainConfig::default().epochs, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub epochs: usize,

    /// Rows per optimizer step, reshuffled every epoch; the whole training split
    /// (one step per epoch, no shuffling) when not given.
    #[arg(long, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,

    /// Hidden layer sizes, comma separated (e.g. 64,32): an MLP of Linear,
    /// ReLU and Dropout per hidden layer, then the output Linear, instead
    /// of the example's one Linear. With --load, the checkpoint's sizes.
    #[arg(long, value_delimiter = ',', value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub hidden: Option<Vec<usize>>,

    /// nn.Dropout(p) after each hidden layer's ReLU, in [0, 1); active in
    /// training steps only (model.train() / model.eval()).
    #[arg(long, value_name = "P", default_value_t = TrainConfig::default().dropout, value_parser = parse_dropout, allow_negative_numbers = true)]
    pub dropout: f64,

    /// The optimizer: torch.optim.SGD, Adam, AdamW or RMSprop, with
    /// torch.optim's arguments and defaults.
    #[arg(long, value_parser = optimizer_kind(), default_value_t = OptimizerConfig::default().kind)]
    pub optimizer: OptimizerKind,

    /// lr; finite and >= 0. Default: 0.5 for sgd (torch.optim.SGD's 1e-3
    /// barely moves this model), torch.optim's for the others (adam and
    /// adamw 1e-3, rmsprop 1e-2).
    #[arg(long, value_parser = parse_lr, allow_negative_numbers = true)]
    pub lr: Option<f64>,

    /// momentum (sgd, rmsprop); >= 0. Default 0.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub momentum: Option<f64>,

    /// dampening of the momentum (sgd); >= 0. Default 0.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub dampening: Option<f64>,

    /// weight_decay; >= 0. An L2 penalty added to the gradient, except for
    /// adamw, whose decay is decoupled. Default: 1e-2 for adamw, else 0.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,

    /// nesterov=True (sgd); needs --momentum > 0 and --dampening 0.
    #[arg(long)]
    pub nesterov: bool,

    /// betas=(B1, B2) (adam, adamw), each in [0, 1), e.g. 0.9,0.999.
    #[arg(long, value_name = "B1,B2", value_parser = parse_betas, allow_negative_numbers = true)]
    pub betas: Option<(f64, f64)>,

    /// eps (adam, adamw, rmsprop); >= 0. Default 1e-8.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub eps: Option<f64>,

    /// amsgrad=True (adam, adamw).
    #[arg(long)]
    pub amsgrad: bool,

    /// alpha, the smoothing constant (rmsprop); >= 0. Default 0.99.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub alpha: Option<f64>,

    /// centered=True (rmsprop).
    #[arg(long)]
    pub centered: bool,

    /// A learning-rate scheduler from torch.optim.lr_scheduler: step
    /// (StepLR), multistep (MultiStepLR), exponential (ExponentialLR),
    /// cosine (CosineAnnealingLR), linear (LinearLR), stepped once per
    /// epoch; onecycle (OneCycleLR), stepped after every batch;
    /// warmup-cosine (SequentialLR of LinearLR for --warmup-epochs, then
    /// CosineAnnealingLR); plateau (ReduceLROnPlateau on the test loss, or
    /// with --mode max the test accuracy). Each takes the flags below that
    /// name it.
    #[arg(long, value_parser = PossibleValuesParser::new(SCHEDULERS.iter().map(|(name, _)| *name)))]
    pub scheduler: Option<String>,

    /// step_size of StepLR (epochs).
    #[arg(long, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub step_size: Option<usize>,

    /// gamma of StepLR, MultiStepLR (default 0.1) and ExponentialLR; > 0.
    #[arg(long, value_parser = parse_positive, allow_negative_numbers = true)]
    pub gamma: Option<f64>,

    /// milestones of MultiStepLR: increasing epochs, comma separated.
    #[arg(long, value_delimiter = ',', value_parser = at_least::<usize, 0>, allow_negative_numbers = true)]
    pub milestones: Option<Vec<usize>>,

    /// T_max of CosineAnnealingLR (epochs).
    #[arg(long, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub t_max: Option<usize>,

    /// eta_min of CosineAnnealingLR (default 0); >= 0.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub eta_min: Option<f64>,

    /// start_factor of LinearLR (default 1/3), in (0, 1].
    #[arg(long, value_parser = parse_positive, allow_negative_numbers = true)]
    pub start_factor: Option<f64>,

    /// end_factor of LinearLR (default 1), in [0, 1].
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub end_factor: Option<f64>,

    /// total_iters of LinearLR (default 5 epochs).
    #[arg(long, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub total_iters: Option<usize>,

    /// max_lr of OneCycleLR (required); > 0. The cycle starts at
    /// max_lr / --div-factor and replaces --lr.
    #[arg(long, value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_lr: Option<f64>,

    /// pct_start of OneCycleLR (default 0.3), in [0, 1].
    #[arg(long, value_parser = parse_unit, allow_negative_numbers = true)]
    pub pct_start: Option<f64>,

    /// anneal_strategy of OneCycleLR: cos (default) or linear.
    #[arg(long, value_parser = ["cos", "linear"])]
    pub anneal_strategy: Option<String>,

    /// cycle_momentum=False (OneCycleLR); by default OneCycleLR cycles the
    /// momentum (Adam's beta1) between --max-momentum and --base-momentum.
    #[arg(long)]
    pub no_cycle_momentum: bool,

    /// base_momentum of OneCycleLR (default 0.85), in [0, 1).
    #[arg(long, value_parser = parse_unit, allow_negative_numbers = true)]
    pub base_momentum: Option<f64>,

    /// max_momentum of OneCycleLR (default 0.95), in [0, 1).
    #[arg(long, value_parser = parse_unit, allow_negative_numbers = true)]
    pub max_momentum: Option<f64>,

    /// div_factor of OneCycleLR (default 25); > 0.
    #[arg(long, value_parser = parse_positive, allow_negative_numbers = true)]
    pub div_factor: Option<f64>,

    /// final_div_factor of OneCycleLR (default 1e4); > 0.
    #[arg(long, value_parser = parse_positive, allow_negative_numbers = true)]
    pub final_div_factor: Option<f64>,

    /// three_phase=True (OneCycleLR).
    #[arg(long)]
    pub three_phase: bool,

    /// Epochs of LinearLR warm-up before CosineAnnealingLR (warmup-cosine;
    /// required). --t-max defaults to the epochs after it.
    #[arg(long, value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub warmup_epochs: Option<usize>,

    /// mode of ReduceLROnPlateau: min (default) watches the test loss, max
    /// the test accuracy.
    #[arg(long, value_parser = ["min", "max"])]
    pub mode: Option<String>,

    /// factor of ReduceLROnPlateau (default 0.1), in (0, 1).
    #[arg(long, value_parser = parse_positive, allow_negative_numbers = true)]
    pub factor: Option<f64>,

    /// patience of ReduceLROnPlateau (default 10 epochs).
    #[arg(long, value_parser = at_least::<usize, 0>, allow_negative_numbers = true)]
    pub patience: Option<usize>,

    /// threshold of ReduceLROnPlateau (default 1e-4); >= 0.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub threshold: Option<f64>,

    /// threshold_mode of ReduceLROnPlateau: rel (default) or abs.
    #[arg(long, value_parser = ["rel", "abs"])]
    pub threshold_mode: Option<String>,

    /// cooldown of ReduceLROnPlateau (default 0 epochs).
    #[arg(long, value_parser = at_least::<usize, 0>, allow_negative_numbers = true)]
    pub cooldown: Option<usize>,

    /// min_lr of ReduceLROnPlateau (default 0); >= 0.
    #[arg(long, value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub min_lr: Option<f64>,

    /// torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=X) after
    /// each backward; X finite and > 0.
    #[arg(long, value_name = "X", value_parser = parse_positive, allow_negative_numbers = true)]
    pub clip_grad_norm: Option<f64>,

    /// norm_type of --clip-grad-norm: 1, 2 or inf (default 2).
    #[arg(long, value_name = "1|2|inf", value_parser = parse_norm_type)]
    pub clip_norm_type: Option<NormType>,

    /// torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=X)
    /// after each backward (after --clip-grad-norm); X finite and > 0.
    #[arg(long, value_name = "X", value_parser = parse_positive, allow_negative_numbers = true)]
    pub clip_grad_value: Option<f64>,

    /// nn.CrossEntropyLoss(label_smoothing=...), in [0, 1].
    #[arg(long, default_value_t = TrainConfig::default().label_smoothing, value_parser = parse_unit, allow_negative_numbers = true)]
    pub label_smoothing: f64,

    /// nn.CrossEntropyLoss(weight=...): one value >= 0 per class, comma
    /// separated, e.g. 1,2,0.5.
    #[arg(long, value_delimiter = ',', value_parser = parse_non_negative, allow_negative_numbers = true)]
    pub class_weights: Option<Vec<f64>>,

    /// Use the raw features instead of z-scores (mean and std of the
    /// training split).
    #[arg(long)]
    pub no_standardize: bool,

    /// Step through autograd (loss.backward()) instead of the exact fast
    /// step, which covers every CPU run: the same numbers, slower. --json's
    /// "backward" says which one ran.
    #[arg(long)]
    pub autograd: bool,

    /// Mixed precision: `with torch.autocast(device.type, dtype):` around
    /// every forward and loss, in bf16 (torch.bfloat16) or fp16
    /// (torch.float16, with torch.amp.GradScaler). Steps through autograd.
    #[arg(long, value_name = "DTYPE", value_parser = amp_dtype())]
    pub amp: Option<AmpDtype>,

    /// GradScaler(init_scale=X) of --amp fp16 (default 65536); finite, > 0.
    #[arg(long, value_name = "X", value_parser = parse_positive, allow_negative_numbers = true)]
    pub init_scale: Option<f64>,

    /// GradScaler(growth_interval=N) of --amp fp16 (default 2000): the
    /// scale doubles after N steps in a row without an inf/NaN gradient.
    #[arg(long, value_name = "N", value_parser = at_least::<i64, 1>, allow_negative_numbers = true)]
    pub growth_interval: Option<i64>,

    /// Start from a saved model (and its standardization) instead of a fresh
    /// nn.Linear init.
    #[arg(long, value_name = "FILE.safetensors")]
    pub load: Option<PathBuf>,

    /// Save the trained model: safetensors with linear.weight and
    /// linear.bias (MyModel's state_dict() names) and the standardization
    /// statistics as metadata.
    #[arg(long, value_name = "FILE.safetensors")]
    pub save: Option<PathBuf>,

    /// Write a resume checkpoint at the end: the model (as --save) plus
    /// the optimizer's and scheduler's state, the random generator's state
    /// and the epoch, for --resume.
    #[arg(long, value_name = "FILE.safetensors")]
    pub checkpoint: Option<PathBuf>,

    /// Also write --checkpoint after every N epochs (each version replaces
    /// the last whole), so a killed run can --resume from the latest.
    #[arg(long, value_name = "N", requires = "checkpoint", value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub checkpoint_every: Option<usize>,

    /// Continue the run a --checkpoint file saved, exactly as if it had
    /// not stopped, up to --epochs: give the flags of that run.
    #[arg(long, value_name = "FILE.safetensors", conflicts_with = "load")]
    pub resume: Option<PathBuf>,

    /// Write the per-epoch metrics as CSV.
    #[arg(long, value_name = "FILE.csv")]
    pub metrics_csv: Option<PathBuf>,

    /// Draw the loss and accuracy curves (train and test) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// No progress output on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Data-parallel training in N processes on this machine (PyTorch DDP
    /// over c10d's gloo, ranks on 127.0.0.1), as `torchrun
    /// --nproc-per-node N` would start them; rank 0 prints and writes the
    /// outputs. Under torchrun itself (RANK, WORLD_SIZE, MASTER_ADDR and
    /// MASTER_PORT set) leave it out: each process is then one rank.
    #[arg(long, value_name = "N", value_parser = at_least::<usize, 1>, allow_negative_numbers = true)]
    pub nproc: Option<usize>,

    /// Seconds a rank waits for the others (at the rendezvous and in each
    /// collective) before the job ends with an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0, value_parser = parse_timeout, allow_negative_numbers = true)]
    pub dist_timeout: f64,

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

/// `--dataset`: the bundled data sets' names, each with its description.
/// The `--scheduler` names and the flags each takes.
pub const SCHEDULERS: [(&str, &[&str]); 8] = [
    ("step", &["--step-size", "--gamma"]),
    ("multistep", &["--milestones", "--gamma"]),
    ("exponential", &["--gamma"]),
    ("cosine", &["--t-max", "--eta-min"]),
    ("linear", &["--start-factor", "--end-factor", "--total-iters"]),
    (
        "onecycle",
        &[
            "--max-lr",
            "--pct-start",
            "--anneal-strategy",
            "--no-cycle-momentum",
            "--base-momentum",
            "--max-momentum",
            "--div-factor",
            "--final-div-factor",
            "--three-phase",
        ],
    ),
    ("warmup-cosine", &["--warmup-epochs", "--start-factor", "--t-max", "--eta-min"]),
    (
        "plateau",
        &[
            "--mode",
            "--factor",
            "--patience",
            "--threshold",
            "--threshold-mode",
            "--cooldown",
            "--min-lr",
        ],
    ),
];

fn bundled() -> impl TypedValueParser<Value = Bundled> {
    PossibleValuesParser::new(Bundled::ALL.map(|b| PossibleValue::new(b.name()).help(b.about())))
        .map(|name| name.parse::<Bundled>().expect("clap passes only the listed names"))
}

/// `--optimizer`: the optimizers' names, each with torch.optim's class.
/// `bench --backward`: how the timed step computes its gradients.
fn backward() -> impl TypedValueParser<Value = Backward> {
    PossibleValuesParser::new([
        PossibleValue::new(Backward::Autograd.name())
            .help("optimizer.zero_grad(); loss.backward(): the example's lines, through autograd"),
        PossibleValue::new(Backward::Manual.name()).help(
            "the same ATen kernels called directly (ManualStep): bit-equal, without the engine",
        ),
    ])
    .map(|name| name.parse::<Backward>().expect("clap passes only the listed names"))
}

/// `--amp`: autocast's two dtypes, each with PyTorch's name.
fn amp_dtype() -> impl TypedValueParser<Value = AmpDtype> {
    PossibleValuesParser::new([
        PossibleValue::new(AmpDtype::Bf16.name()).help("torch.bfloat16, no scaler"),
        PossibleValue::new(AmpDtype::Fp16.name()).help("torch.float16, with torch.amp.GradScaler"),
    ])
    .map(|name| name.parse::<AmpDtype>().expect("clap passes only the listed names"))
}

fn optimizer_kind() -> impl TypedValueParser<Value = OptimizerKind> {
    PossibleValuesParser::new(
        OptimizerKind::ALL
            .map(|k| PossibleValue::new(k.name()).help(format!("torch.optim.{}", k.torch_name()))),
    )
    .map(|name| name.parse::<OptimizerKind>().expect("clap passes only the listed names"))
}

/// `--betas B1,B2`: two numbers in [0, 1).
fn parse_betas(s: &str) -> Result<(f64, f64), String> {
    let parts: Vec<&str> = s.split(',').collect();
    let beta = |p: &str| match parse_finite(p) {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("each beta must be a number in [0, 1), got '{}'", p.trim())),
    };
    match parts.as_slice() {
        [b1, b2] => Ok((beta(b1)?, beta(b2)?)),
        _ => Err(format!("expected two numbers B1,B2 (e.g. 0.9,0.999), got '{s}'")),
    }
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

fn parse_positive(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!("must be a finite number > 0, got {s}")),
    }
}

fn parse_norm_type(s: &str) -> Result<NormType, String> {
    s.trim().parse()
}

fn parse_unit(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be between 0 and 1, got {s}")),
    }
}

fn parse_dropout(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be in [0, 1), got {s}")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("must be between 0 and 1 (exclusive), got {s}")),
    }
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match parse_finite(s) {
        Ok(v) if v > 0.0 && v <= 86400.0 => Ok(v),
        _ => Err(format!("must be seconds in (0, 86400], got {s}")),
    }
}
