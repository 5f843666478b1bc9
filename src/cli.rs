//! The command line: the seed's constants as flags, with the seed's values
//! as defaults.

use crate::device::DeviceRequest;
use crate::output;
use crate::training::{run_seed, SeedConfig};
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::fmt;
use std::io::Write;

/// Runs PyTorch's classic cross-entropy example, ported line by line to Rust
/// on tch (libtorch): MyModel (one nn.Linear), nn.CrossEntropyLoss(),
/// torch.optim.SGD, inputs = torch.randn(...), targets = torch.randint(...);
/// forward, print(loss), zero_grad, backward, step. With the same seed it
/// computes the same numbers as PyTorch, bit for bit on the CPU.
#[derive(Debug, Parser)]
#[command(name = "cross-entropy-tch", version)]
pub struct Cli {
    /// torch.manual_seed(SEED), called before the model is built.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: i64,

    /// Where model, inputs and targets live: cpu, cuda (that is cuda:0),
    /// cuda:N, or auto (cuda:0 when libtorch sees a GPU, else cpu). Random
    /// numbers are always drawn on the CPU and then moved, so every device
    /// starts from the same numbers.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,

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

    /// libtorch's intra-op threads (torch.set_num_threads); libtorch's
    /// default (one per core) when not given.
    #[arg(long, value_parser = at_least::<i32, 1>, allow_negative_numbers = true)]
    pub threads: Option<i32>,

    /// Print one JSON document and nothing else on stdout: config, initial
    /// parameters, inputs, targets, logits, per-step losses, first gradients
    /// and final parameters; the same document as scripts/reference.py --json.
    #[arg(long)]
    pub json: bool,
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

fn parse_lr(s: &str) -> Result<f64, String> {
    let lr: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !lr.is_finite() || lr < 0.0 {
        return Err(format!("the learning rate must be finite and >= 0, got {s}"));
    }
    Ok(lr)
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

/// The largest tensor the example agrees to allocate, in elements (4 GiB of f32).
const MAX_ELEMENTS: i64 = 1 << 30;

impl Cli {
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

/// Runs what the flags ask for, printing to stdout.
pub fn run(cli: &Cli) -> Result<()> {
    let config = cli.config()?;
    let device = cli.device.resolve().map_err(|e| UsageError(e.to_string()))?;
    if let Some(threads) = cli.threads {
        tch::set_num_threads(threads);
    }
    let stdout = std::io::stdout();
    if !cli.json {
        writeln!(stdout.lock(), "{}", output::header(&config, device))
            .context("writing to stdout")?;
    }
    let steps = config.steps;
    let run = run_seed(&config, device, |step, loss| {
        if !cli.json && output::prints_step(step, steps) {
            // A closed stdout is not worth failing the run for.
            let _ = writeln!(stdout.lock(), "{}", output::step_line(step, steps, loss));
        }
    })?;
    let mut out = stdout.lock();
    if cli.json {
        output::write_json(&run, &mut out).context("writing the JSON to stdout")?;
    } else {
        writeln!(out, "{}", output::summary(&run)?).context("writing to stdout")?;
    }
    Ok(())
}
