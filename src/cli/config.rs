//! From flags to the library's configs and inputs: the checks that span
//! several flags, loading the data and checkpoints the flags name, and the
//! flag names added to the library's errors. A refusal here is a
//! [`UsageError`] (exit status 2).

use super::args::{BenchArgs, CommonArgs, DataArgs, ExampleArgs, TrainArgs, SCHEDULERS};
use anyhow::Result;
use cross_entropy_tch::amp::{AmpDtype, GradScalerConfig};
use cross_entropy_tch::checkpoint::Checkpoint;
use cross_entropy_tch::data::Dataset;
use cross_entropy_tch::optim::{OptimizerConfig, OptimizerKind};
use cross_entropy_tch::resume;
use cross_entropy_tch::schedule::SchedulerConfig;
use cross_entropy_tch::step::Backward;
use cross_entropy_tch::training::{self, TrainError, TrainState};
use cross_entropy_tch::{ExampleConfig, TrainConfig};
use std::fmt;
use std::path::Path;

/// An error in what the user asked for (exit status 2), as opposed to a
/// failure while doing it (exit status 1). It wraps the error that says why,
/// keeping its whole chain of causes.
#[derive(Debug)]
pub struct UsageError(anyhow::Error);

impl UsageError {
    /// The error `e`, marked as the user's.
    pub fn wrap(e: impl Into<anyhow::Error>) -> anyhow::Error {
        anyhow::Error::new(UsageError(e.into()))
    }

    /// A refusal in our own words.
    pub fn msg(message: String) -> anyhow::Error {
        UsageError::wrap(anyhow::Error::msg(message))
    }

    /// Whether `e` is, or was caused by, a usage error.
    pub fn is_in(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<UsageError>())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrapped error's own message; its causes follow as `source`s.
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for UsageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Marks a library error as the user's, with the flag (and value) it came from.
trait UsageContext<T> {
    fn usage(self, flag: impl fmt::Display) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> UsageContext<T> for Result<T, E> {
    fn usage(self, flag: impl fmt::Display) -> Result<T> {
        self.map_err(|e| UsageError::wrap(anyhow::Error::new(e).context(flag.to_string())))
    }
}

/// The largest tensor the example agrees to allocate, in elements (4 GiB of f32).
const MAX_ELEMENTS: i64 = 1 << 30;

impl ExampleArgs {
    /// The example's config these flags describe.
    pub fn config(&self) -> Result<ExampleConfig> {
        let sizes = [
            ("--batch-size x --features (inputs)", self.batch_size.checked_mul(self.features)),
            ("--features x --classes (weight)", self.features.checked_mul(self.classes)),
            ("--batch-size x --classes (logits)", self.batch_size.checked_mul(self.classes)),
        ];
        for (what, elements) in sizes {
            if elements.is_none_or(|e| e > MAX_ELEMENTS) {
                return Err(UsageError::msg(format!(
                    "{what} is over {MAX_ELEMENTS} elements; use smaller sizes"
                )));
            }
        }
        Ok(ExampleConfig {
            seed: self.seed,
            batch_size: self.batch_size,
            features: self.features,
            classes: self.classes,
            lr: self.lr,
            steps: self.steps,
        })
    }
}

impl BenchArgs {
    /// The example's config, once the flags are known to go together.
    pub fn bench_config(&self) -> Result<ExampleConfig> {
        if let (Some(dtype), Backward::Manual, false) = (self.amp, self.backward, self.gemm_only) {
            return Err(UsageError::msg(format!(
                "--amp {} steps through autograd; --backward manual is the f32 step",
                dtype.name()
            )));
        }
        self.example.config()
    }
}

impl TrainArgs {
    /// The training config these flags describe.
    pub fn config(&self) -> Result<TrainConfig> {
        if let (Some(norm_type), None) = (self.clip_norm_type, self.clip_grad_norm) {
            return Err(UsageError::msg(format!(
                "--clip-norm-type {norm_type} needs --clip-grad-norm"
            )));
        }
        let scaler_flag = [
            ("--init-scale", self.init_scale.is_some()),
            ("--growth-interval", self.growth_interval.is_some()),
        ];
        if let Some((flag, _)) = scaler_flag.iter().find(|(_, given)| *given) {
            if !self.amp.is_some_and(AmpDtype::needs_scaler) {
                return Err(UsageError::msg(format!(
                    "{flag} is the GradScaler's, which only --amp fp16 has"
                )));
            }
        }
        let defaults = GradScalerConfig::default();
        let grad_scaler = GradScalerConfig {
            init_scale: self.init_scale.unwrap_or(defaults.init_scale),
            growth_interval: self.growth_interval.unwrap_or(defaults.growth_interval),
            ..defaults
        };
        Ok(TrainConfig {
            seed: self.seed,
            epochs: self.epochs,
            hidden: self.hidden.clone().unwrap_or_default(),
            dropout: self.dropout,
            batch_size: self.batch_size,
            optimizer: self.optimizer_config()?,
            scheduler: self.scheduler_config()?,
            clip_grad_norm: self.clip_grad_norm,
            clip_norm_type: self.clip_norm_type.unwrap_or(TrainConfig::default().clip_norm_type),
            clip_grad_value: self.clip_grad_value,
            label_smoothing: self.label_smoothing,
            class_weights: self.class_weights.clone(),
            test_fraction: self.test_fraction,
            standardize: !self.no_standardize,
            fast_step: !self.autograd,
            amp: self.amp,
            grad_scaler,
        })
    }

    /// `--optimizer` and its arguments, on torch.optim's defaults. An
    /// argument the chosen optimizer does not take is refused, not ignored.
    fn optimizer_config(&self) -> Result<OptimizerConfig> {
        use OptimizerKind::{Adam, AdamW, RmsProp, Sgd};
        let kind = self.optimizer;
        let mut c = OptimizerConfig::new(kind);
        let given = [
            ("--momentum", self.momentum.is_some(), &[Sgd, RmsProp][..]),
            ("--dampening", self.dampening.is_some(), &[Sgd][..]),
            ("--nesterov", self.nesterov, &[Sgd][..]),
            ("--betas", self.betas.is_some(), &[Adam, AdamW][..]),
            ("--eps", self.eps.is_some(), &[Adam, AdamW, RmsProp][..]),
            ("--amsgrad", self.amsgrad, &[Adam, AdamW][..]),
            ("--alpha", self.alpha.is_some(), &[RmsProp][..]),
            ("--centered", self.centered, &[RmsProp][..]),
        ];
        for (flag, is_given, takes) in given {
            if is_given && !takes.contains(&kind) {
                let names: Vec<&str> = takes.iter().map(|k| k.name()).collect();
                return Err(UsageError::msg(format!(
                    "{flag} is an argument of --optimizer {}, not of {kind}",
                    names.join(" or ")
                )));
            }
        }
        c.lr = self.lr.unwrap_or(c.lr);
        c.momentum = self.momentum.unwrap_or(c.momentum);
        c.dampening = self.dampening.unwrap_or(c.dampening);
        c.weight_decay = self.weight_decay.unwrap_or(c.weight_decay);
        c.nesterov = self.nesterov;
        c.betas = self.betas.unwrap_or(c.betas);
        c.eps = self.eps.unwrap_or(c.eps);
        c.amsgrad = self.amsgrad;
        c.alpha = self.alpha.unwrap_or(c.alpha);
        c.centered = self.centered;
        // The arguments' own rules are the library's (`check`, below).
        Ok(c)
    }

    /// `--scheduler` and its arguments, on PyTorch's defaults; an argument
    /// of another scheduler is refused, a required one missing is asked for.
    fn scheduler_config(&self) -> Result<Option<SchedulerConfig>> {
        use cross_entropy_tch::schedule::{
            Anneal, PlateauMode, ThresholdMode, DEFAULT_ETA_MIN, DEFAULT_GAMMA, LINEAR_DEFAULTS,
        };
        let given = [
            ("--step-size", self.step_size.is_some()),
            ("--gamma", self.gamma.is_some()),
            ("--milestones", self.milestones.is_some()),
            ("--t-max", self.t_max.is_some()),
            ("--eta-min", self.eta_min.is_some()),
            ("--start-factor", self.start_factor.is_some()),
            ("--end-factor", self.end_factor.is_some()),
            ("--total-iters", self.total_iters.is_some()),
            ("--max-lr", self.max_lr.is_some()),
            ("--pct-start", self.pct_start.is_some()),
            ("--anneal-strategy", self.anneal_strategy.is_some()),
            ("--no-cycle-momentum", self.no_cycle_momentum),
            ("--base-momentum", self.base_momentum.is_some()),
            ("--max-momentum", self.max_momentum.is_some()),
            ("--div-factor", self.div_factor.is_some()),
            ("--final-div-factor", self.final_div_factor.is_some()),
            ("--three-phase", self.three_phase),
            ("--warmup-epochs", self.warmup_epochs.is_some()),
            ("--mode", self.mode.is_some()),
            ("--factor", self.factor.is_some()),
            ("--patience", self.patience.is_some()),
            ("--threshold", self.threshold.is_some()),
            ("--threshold-mode", self.threshold_mode.is_some()),
            ("--cooldown", self.cooldown.is_some()),
            ("--min-lr", self.min_lr.is_some()),
        ];
        let Some(name) = self.scheduler.as_deref() else {
            if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                return Err(UsageError::msg(format!("{flag} needs --scheduler")));
            }
            return Ok(None);
        };
        let takes = SCHEDULERS.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, t)| *t);
        for (flag, is_given) in given {
            if is_given && !takes.contains(&flag) {
                return Err(UsageError::msg(format!(
                    "{flag} is not an argument of --scheduler {name}"
                )));
            }
        }
        let required = |flag: &str| UsageError::msg(format!("--scheduler {name} needs {flag}"));
        Ok(Some(match name {
            "step" => SchedulerConfig::Step {
                step_size: self.step_size.ok_or_else(|| required("--step-size"))?,
                gamma: self.gamma.unwrap_or(DEFAULT_GAMMA),
            },
            "multistep" => SchedulerConfig::MultiStep {
                milestones: self.milestones.clone().ok_or_else(|| required("--milestones"))?,
                gamma: self.gamma.unwrap_or(DEFAULT_GAMMA),
            },
            "exponential" => SchedulerConfig::Exponential {
                gamma: self.gamma.ok_or_else(|| required("--gamma"))?,
            },
            "cosine" => SchedulerConfig::Cosine {
                t_max: self.t_max.ok_or_else(|| required("--t-max"))?,
                eta_min: self.eta_min.unwrap_or(DEFAULT_ETA_MIN),
            },
            "linear" => SchedulerConfig::Linear {
                start_factor: self.start_factor.unwrap_or(LINEAR_DEFAULTS.0),
                end_factor: self.end_factor.unwrap_or(LINEAR_DEFAULTS.1),
                total_iters: self.total_iters.unwrap_or(LINEAR_DEFAULTS.2),
            },
            "onecycle" => {
                let max_lr = self.max_lr.ok_or_else(|| required("--max-lr"))?;
                let SchedulerConfig::OneCycle {
                    pct_start,
                    base_momentum,
                    max_momentum,
                    div_factor,
                    final_div_factor,
                    ..
                } = SchedulerConfig::one_cycle(max_lr)
                else {
                    unreachable!("one_cycle builds a OneCycle")
                };
                SchedulerConfig::OneCycle {
                    max_lr,
                    total_steps: None,
                    pct_start: self.pct_start.unwrap_or(pct_start),
                    anneal_strategy: match self.anneal_strategy.as_deref() {
                        Some("linear") => Anneal::Linear,
                        _ => Anneal::Cos,
                    },
                    cycle_momentum: !self.no_cycle_momentum,
                    base_momentum: self.base_momentum.unwrap_or(base_momentum),
                    max_momentum: self.max_momentum.unwrap_or(max_momentum),
                    div_factor: self.div_factor.unwrap_or(div_factor),
                    final_div_factor: self.final_div_factor.unwrap_or(final_div_factor),
                    three_phase: self.three_phase,
                }
            }
            "warmup-cosine" => {
                let warmup = self.warmup_epochs.ok_or_else(|| required("--warmup-epochs"))?;
                let t_max = match self.t_max {
                    Some(t) => t,
                    None if self.epochs > warmup => self.epochs - warmup,
                    None => {
                        return Err(UsageError::msg(format!(
                            "--warmup-epochs {warmup} leaves no epoch of --epochs {} for the cosine; give --t-max",
                            self.epochs
                        )))
                    }
                };
                SchedulerConfig::warmup_cosine(
                    warmup,
                    self.start_factor.unwrap_or(LINEAR_DEFAULTS.0),
                    t_max,
                    self.eta_min.unwrap_or(DEFAULT_ETA_MIN),
                )
            }
            _ => {
                let SchedulerConfig::Plateau {
                    factor,
                    patience,
                    threshold,
                    cooldown,
                    min_lr,
                    eps,
                    ..
                } = SchedulerConfig::plateau()
                else {
                    unreachable!("plateau builds a Plateau")
                };
                SchedulerConfig::Plateau {
                    mode: match self.mode.as_deref() {
                        Some("max") => PlateauMode::Max,
                        _ => PlateauMode::Min,
                    },
                    factor: self.factor.unwrap_or(factor),
                    patience: self.patience.unwrap_or(patience),
                    threshold: self.threshold.unwrap_or(threshold),
                    threshold_mode: match self.threshold_mode.as_deref() {
                        Some("abs") => ThresholdMode::Abs,
                        _ => ThresholdMode::Rel,
                    },
                    cooldown: self.cooldown.unwrap_or(cooldown),
                    min_lr: self.min_lr.unwrap_or(min_lr),
                    eps,
                }
            }
        }))
    }

    /// Checks that the data, the config and the `--load` checkpoint fit
    /// together, naming the flag at fault.
    pub fn check(
        &self,
        data: &Dataset,
        config: &TrainConfig,
        init: Option<&Checkpoint>,
    ) -> Result<()> {
        match training::check_train(data, config, init) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.flag_of(e)),
        }
    }

    fn flag_of(&self, e: TrainError) -> anyhow::Error {
        let flag = match &e {
            TrainError::ClassWeights { .. } => "--class-weights".to_string(),
            TrainError::Split(_) => format!("--test-fraction {}", self.test_fraction),
            TrainError::CheckpointFeatures { .. } | TrainError::CheckpointClasses { .. } => {
                match (&self.load, &self.resume) {
                    (None, Some(path)) => format!("--resume {}", path.display()),
                    (load, _) => {
                        format!("--load {}", load.as_deref().unwrap_or(Path::new("")).display())
                    }
                }
            }
            // `betas[0]` is --betas, `weight_decay` --weight-decay, ...
            TrainError::Optimizer(o) => {
                format!("--{}", o.argument().split('[').next().unwrap_or("").replace('_', "-"))
            }
            TrainError::Config { what, .. } => format!("--{}", what.replace('_', "-")),
            TrainError::Schedule(e) => format!("--{}", e.what.replace('_', "-")),
            _ => return UsageError::wrap(e),
        };
        UsageError::wrap(anyhow::Error::new(e).context(flag))
    }
}

impl CommonArgs {
    /// Resolves `--device` and applies `--threads`.
    pub fn apply(&self) -> Result<tch::Device> {
        let device = self.device.resolve().usage(format!("--device {}", self.device))?;
        if let Some(threads) = self.threads {
            tch::set_num_threads(threads);
        }
        Ok(device)
    }
}

impl DataArgs {
    /// The data set `--dataset` or `--data` names.
    pub fn load(&self) -> Result<Dataset> {
        match (&self.dataset, &self.data) {
            (Some(which), _) => Dataset::bundled(*which).usage(format!("--dataset {which}")),
            (None, Some(path)) => {
                Dataset::from_csv(path).usage(format!("--data {}", path.display()))
            }
            (None, None) => Err(UsageError::msg("give --dataset or --data".to_string())),
        }
    }
}

/// The checkpoint `--load PATH` names.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    Checkpoint::read(path).usage(format!("--load {}", path.display()))
}

/// The resume checkpoint `--resume PATH` names.
pub fn load_resume(path: &Path) -> Result<TrainState> {
    resume::read(path).usage(format!("--resume {}", path.display()))
}

/// Whether the `--resume` state fits this run, naming the file if not.
pub fn check_resume(
    st: &TrainState,
    data: &Dataset,
    config: &TrainConfig,
    path: &Path,
) -> Result<()> {
    training::check_resume(st, data, config).usage(format!("--resume {}", path.display()))
}

/// An evaluation's failure, with the flags that can fix it named.
pub fn eval_error(e: TrainError, load: &Path) -> anyhow::Error {
    match e {
        TrainError::NoStandardization => UsageError::msg(format!(
            "--load {}: the checkpoint holds no standardization statistics (a plain state_dict?); if the model was trained on raw features, pass --no-standardize",
            load.display()
        )),
        TrainError::CheckpointFeatures { .. } | TrainError::CheckpointClasses { .. } => {
            UsageError::wrap(anyhow::Error::new(e).context(format!("--load {}", load.display())))
        }
        e => anyhow::Error::new(e),
    }
}
