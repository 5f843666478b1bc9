//! Learning-rate schedulers with `torch.optim.lr_scheduler`'s semantics and
//! its formulas: the recursive ("chainable") `get_lr` of PyTorch 2.13, each
//! step computing the new lr from the current one, in f64 as Python does. A
//! closed-form port would drift from PyTorch's lrs in the low bits.
//!
//! ```python
//! scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
//! for epoch in range(epochs):
//!     train(...)          # optimizer.step() per batch
//!     scheduler.step()    # once per epoch
//! ```
//!
//! Built, a scheduler takes its initial step (PyTorch's `_initial_step`),
//! which may already change the lr (LinearLR's `start_factor`).
//!
//! Not here yet: OneCycleLR, SequentialLR, ReduceLROnPlateau.

use crate::optim::Optimizer;
use serde::Serialize;
use std::fmt;

/// A scheduler and its arguments, with `torch.optim.lr_scheduler`'s names.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "scheduler", rename_all = "lowercase")]
pub enum SchedulerConfig {
    /// `StepLR(step_size, gamma=0.1)`.
    Step { step_size: usize, gamma: f64 },
    /// `MultiStepLR(milestones, gamma=0.1)`.
    MultiStep { milestones: Vec<usize>, gamma: f64 },
    /// `ExponentialLR(gamma)`.
    Exponential { gamma: f64 },
    /// `CosineAnnealingLR(T_max, eta_min=0.0)`.
    Cosine { t_max: usize, eta_min: f64 },
    /// `LinearLR(start_factor=1/3, end_factor=1.0, total_iters=5)`.
    Linear { start_factor: f64, end_factor: f64, total_iters: usize },
}

/// `gamma`'s default (StepLR, MultiStepLR).
pub const DEFAULT_GAMMA: f64 = 0.1;
/// LinearLR's defaults: `start_factor=1.0 / 3`, `end_factor=1.0`, `total_iters=5`.
pub const LINEAR_DEFAULTS: (f64, f64, usize) = (1.0 / 3.0, 1.0, 5);
/// CosineAnnealingLR's `eta_min` default.
pub const DEFAULT_ETA_MIN: f64 = 0.0;

/// A scheduler argument that makes no sense (PyTorch refuses most of these).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleError {
    pub what: &'static str,
    pub rule: &'static str,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} must be {}", self.what, self.rule)
    }
}

impl std::error::Error for ScheduleError {}

impl SchedulerConfig {
    /// The scheduler's class in `torch.optim.lr_scheduler`.
    pub fn torch_name(&self) -> &'static str {
        match self {
            SchedulerConfig::Step { .. } => "StepLR",
            SchedulerConfig::MultiStep { .. } => "MultiStepLR",
            SchedulerConfig::Exponential { .. } => "ExponentialLR",
            SchedulerConfig::Cosine { .. } => "CosineAnnealingLR",
            SchedulerConfig::Linear { .. } => "LinearLR",
        }
    }

    /// Whether the arguments make sense.
    pub fn check(&self) -> Result<(), ScheduleError> {
        let bad = |what, rule| Err(ScheduleError { what, rule });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        match self {
            SchedulerConfig::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return bad("step_size", "at least 1");
                }
                if !positive(*gamma) {
                    return bad("gamma", "finite and > 0");
                }
            }
            SchedulerConfig::MultiStep { milestones, gamma } => {
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return bad("milestones", "increasing");
                }
                if !positive(*gamma) {
                    return bad("gamma", "finite and > 0");
                }
            }
            SchedulerConfig::Exponential { gamma } => {
                if !positive(*gamma) {
                    return bad("gamma", "finite and > 0");
                }
            }
            SchedulerConfig::Cosine { t_max, eta_min } => {
                if *t_max == 0 {
                    return bad("t_max", "at least 1");
                }
                if !(eta_min.is_finite() && *eta_min >= 0.0) {
                    return bad("eta_min", "finite and >= 0");
                }
            }
            SchedulerConfig::Linear { start_factor, end_factor, total_iters } => {
                // PyTorch: 0 < start_factor <= 1, 0 <= end_factor <= 1.
                if !(*start_factor > 0.0 && *start_factor <= 1.0) {
                    return bad("start_factor", "in (0, 1]");
                }
                if !(0.0..=1.0).contains(end_factor) {
                    return bad("end_factor", "in [0, 1]");
                }
                if *total_iters == 0 {
                    return bad("total_iters", "at least 1");
                }
            }
        }
        Ok(())
    }
}

/// A running scheduler: `last_epoch`, the optimizer's current lr and the
/// initial one (`base_lrs`), as PyTorch keeps them (one param group).
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    base_lr: f64,
    lr: f64,
    last_epoch: i64,
}

impl Scheduler {
    /// `Scheduler(optimizer, ...)`: records the optimizer's lr as `base_lr`
    /// and takes the initial step, setting the optimizer's lr.
    pub fn new(config: SchedulerConfig, optimizer: &mut Optimizer) -> Scheduler {
        let lr = optimizer.lr();
        let mut s = Scheduler { config, base_lr: lr, lr, last_epoch: 0 };
        s.lr = s.get_lr(true);
        optimizer.set_lr(s.lr);
        s
    }

    /// `scheduler.step()`: the next epoch's lr, set on the optimizer.
    pub fn step(&mut self, optimizer: &mut Optimizer) {
        self.last_epoch += 1;
        self.lr = self.get_lr(false);
        optimizer.set_lr(self.lr);
    }

    /// `scheduler.get_last_lr()[0]`.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// PyTorch 2.13's `get_lr`, from the current lr (`group["lr"]`).
    fn get_lr(&self, initial: bool) -> f64 {
        let (lr, e) = (self.lr, self.last_epoch);
        match &self.config {
            SchedulerConfig::Step { step_size, gamma } => {
                if e == 0 || e % *step_size as i64 != 0 {
                    lr
                } else {
                    lr * gamma
                }
            }
            SchedulerConfig::MultiStep { milestones, gamma } => {
                // milestones is a Counter: a repeated milestone counts twice.
                let count = milestones.iter().filter(|&&m| m as i64 == e).count();
                if count == 0 {
                    lr
                } else {
                    lr * gamma.powf(count as f64)
                }
            }
            SchedulerConfig::Exponential { gamma } => {
                if e == 0 {
                    lr
                } else {
                    lr * gamma
                }
            }
            SchedulerConfig::Cosine { t_max, eta_min } => {
                let (t_max, eta_min) = (*t_max as f64, *eta_min);
                let pi = std::f64::consts::PI;
                if initial {
                    lr
                } else if (e - 1 - t_max as i64).rem_euclid(2 * t_max as i64) == 0 {
                    lr + (self.base_lr - eta_min) * (1.0 - (pi / t_max).cos()) / 2.0
                } else {
                    (1.0 + (pi * e as f64 / t_max).cos())
                        / (1.0 + (pi * (e - 1) as f64 / t_max).cos())
                        * (lr - eta_min)
                        + eta_min
                }
            }
            SchedulerConfig::Linear { start_factor, end_factor, total_iters } => {
                if e == 0 {
                    lr * start_factor
                } else if initial || e > *total_iters as i64 {
                    lr
                } else {
                    lr * (1.0
                        + (end_factor - start_factor)
                            / (*total_iters as f64 * start_factor
                                + (e - 1) as f64 * (end_factor - start_factor)))
                }
            }
        }
    }
}
