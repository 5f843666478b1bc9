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
//! When each is stepped ([`SchedulerConfig::stepping`]) is the training
//! script's choice in PyTorch; this crate follows the usual scripts:
//! OneCycleLR after every `optimizer.step()`, ReduceLROnPlateau once per
//! epoch with the metric it watches, the others once per epoch.

use crate::optim::Optimizer;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A scheduler and its arguments, with `torch.optim.lr_scheduler`'s names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// `OneCycleLR(max_lr, total_steps, pct_start=0.3, anneal_strategy="cos",
    /// cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
    /// div_factor=25.0, final_div_factor=1e4, three_phase=False)`. It sets
    /// the lr from the first step on (the optimizer's own lr is not used)
    /// and, with `cycle_momentum`, the momentum too: SGD's and RMSprop's
    /// `momentum`, Adam's and AdamW's `betas[0]`. `total_steps: None` is
    /// `epochs * steps_per_epoch`, which the training loop fills in.
    OneCycle {
        max_lr: f64,
        total_steps: Option<usize>,
        pct_start: f64,
        anneal_strategy: Anneal,
        cycle_momentum: bool,
        base_momentum: f64,
        max_momentum: f64,
        div_factor: f64,
        final_div_factor: f64,
        three_phase: bool,
    },
    /// `SequentialLR(schedulers, milestones)`: `schedulers[i]` from epoch
    /// `milestones[i - 1]` on (StepLR, MultiStepLR, ExponentialLR,
    /// CosineAnnealingLR and LinearLR only).
    Sequential { schedulers: Vec<SchedulerConfig>, milestones: Vec<usize> },
    /// `ReduceLROnPlateau(mode="min", factor=0.1, patience=10,
    /// threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0,
    /// eps=1e-8)`, stepped with the metric it watches.
    Plateau {
        mode: PlateauMode,
        factor: f64,
        patience: usize,
        threshold: f64,
        threshold_mode: ThresholdMode,
        cooldown: usize,
        min_lr: f64,
        eps: f64,
    },
}

/// OneCycleLR's `anneal_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anneal {
    Cos,
    Linear,
}

/// ReduceLROnPlateau's `mode`: whether the metric should go down or up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateauMode {
    Min,
    Max,
}

/// ReduceLROnPlateau's `threshold_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdMode {
    Rel,
    Abs,
}

/// When a scheduler's `step()` is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepping {
    /// Once per epoch, after the epoch's steps and evaluation.
    PerEpoch,
    /// After every `optimizer.step()`.
    PerBatch,
    /// Once per epoch, with the metric it watches (ReduceLROnPlateau).
    OnMetric,
}

/// `gamma`'s default (StepLR, MultiStepLR).
pub const DEFAULT_GAMMA: f64 = 0.1;
/// LinearLR's defaults: `start_factor=1.0 / 3`, `end_factor=1.0`, `total_iters=5`.
pub const LINEAR_DEFAULTS: (f64, f64, usize) = (1.0 / 3.0, 1.0, 5);
/// CosineAnnealingLR's `eta_min` default.
pub const DEFAULT_ETA_MIN: f64 = 0.0;

impl SchedulerConfig {
    /// `OneCycleLR(optimizer, max_lr)` with PyTorch's defaults for the rest.
    pub fn one_cycle(max_lr: f64) -> SchedulerConfig {
        SchedulerConfig::OneCycle {
            max_lr,
            total_steps: None,
            pct_start: 0.3,
            anneal_strategy: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }

    /// `ReduceLROnPlateau(optimizer)` with PyTorch's defaults.
    pub fn plateau() -> SchedulerConfig {
        SchedulerConfig::Plateau {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }

    /// `SequentialLR([LinearLR(start_factor, total_iters=warmup),
    /// CosineAnnealingLR(T_max, eta_min)], milestones=[warmup])`: a linear
    /// warm-up, then cosine annealing.
    pub fn warmup_cosine(
        warmup: usize,
        start_factor: f64,
        t_max: usize,
        eta_min: f64,
    ) -> SchedulerConfig {
        SchedulerConfig::Sequential {
            schedulers: vec![
                SchedulerConfig::Linear {
                    start_factor,
                    end_factor: LINEAR_DEFAULTS.1,
                    total_iters: warmup,
                },
                SchedulerConfig::Cosine { t_max, eta_min },
            ],
            milestones: vec![warmup],
        }
    }

    /// The scheduler's class in `torch.optim.lr_scheduler`.
    pub fn torch_name(&self) -> &'static str {
        match self {
            SchedulerConfig::Step { .. } => "StepLR",
            SchedulerConfig::MultiStep { .. } => "MultiStepLR",
            SchedulerConfig::Exponential { .. } => "ExponentialLR",
            SchedulerConfig::Cosine { .. } => "CosineAnnealingLR",
            SchedulerConfig::Linear { .. } => "LinearLR",
            SchedulerConfig::OneCycle { .. } => "OneCycleLR",
            SchedulerConfig::Sequential { .. } => "SequentialLR",
            SchedulerConfig::Plateau { .. } => "ReduceLROnPlateau",
        }
    }

    /// When the training loop steps it.
    pub fn stepping(&self) -> Stepping {
        match self {
            SchedulerConfig::OneCycle { .. } => Stepping::PerBatch,
            SchedulerConfig::Plateau { .. } => Stepping::OnMetric,
            _ => Stepping::PerEpoch,
        }
    }

    /// Whether the arguments make sense.
    pub fn check(&self) -> Result<(), ScheduleError> {
        let bad = |what, rule| Err(ScheduleError { what, rule });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
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
                if !non_negative(*eta_min) {
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
            SchedulerConfig::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                base_momentum,
                max_momentum,
                div_factor,
                final_div_factor,
                three_phase,
                ..
            } => {
                if !positive(*max_lr) {
                    return bad("max_lr", "finite and > 0");
                }
                if !(0.0..=1.0).contains(pct_start) {
                    return bad("pct_start", "in [0, 1]");
                }
                for (what, v) in
                    [("div_factor", div_factor), ("final_div_factor", final_div_factor)]
                {
                    if !positive(*v) {
                        return bad(what, "finite and > 0");
                    }
                }
                for (what, v) in [("base_momentum", base_momentum), ("max_momentum", max_momentum)]
                {
                    if !(0.0..1.0).contains(v) {
                        return bad(what, "in [0, 1)");
                    }
                }
                if let Some(total) = total_steps {
                    if *total == 0 {
                        return bad("total_steps", "at least 1");
                    }
                    // PyTorch divides by each phase's length: a first
                    // phase that ends at step 0, or a last one of no
                    // length, is a ZeroDivisionError there.
                    let ends = one_cycle_ends(*total, *pct_start, *three_phase);
                    let last = ends.len() - 1;
                    if ends[0] == 0.0 || ends[last] == ends[last - 1] {
                        return bad(
                            "pct_start",
                            "such that no phase of the cycle is empty (not 1, and not 1 / total steps)",
                        );
                    }
                }
            }
            SchedulerConfig::Sequential { schedulers, milestones } => {
                if schedulers.is_empty() {
                    return bad("schedulers", "at least one scheduler");
                }
                if milestones.len() + 1 != schedulers.len() {
                    return bad("milestones", "one fewer than the schedulers");
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) || milestones.first() == Some(&0) {
                    return bad("milestones", "increasing and > 0");
                }
                for s in schedulers {
                    if s.stepping() != Stepping::PerEpoch
                        || matches!(s, SchedulerConfig::Sequential { .. })
                    {
                        return bad(
                            "schedulers",
                            "StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR or LinearLR",
                        );
                    }
                    s.check()?;
                }
            }
            SchedulerConfig::Plateau { factor, threshold, min_lr, eps, .. } => {
                if !(*factor > 0.0 && *factor < 1.0) {
                    return bad("factor", "in (0, 1)");
                }
                for (what, v) in [("threshold", threshold), ("min_lr", min_lr), ("eps", eps)] {
                    if !non_negative(*v) {
                        return bad(what, "finite and >= 0");
                    }
                }
            }
        }
        Ok(())
    }
}

/// A scheduler argument that makes no sense (PyTorch refuses most of
/// these), or a step PyTorch would refuse.
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

/// OneCycleLR's phases' `end_step`s, computed as PyTorch computes them.
fn one_cycle_ends(total_steps: usize, pct_start: f64, three_phase: bool) -> Vec<f64> {
    let total = total_steps as f64;
    if three_phase {
        vec![pct_start * total - 1.0, 2.0 * pct_start * total - 2.0, total - 1.0]
    } else {
        vec![pct_start * total - 1.0, total - 1.0]
    }
}

/// A running scheduler (one param group), stepped as PyTorch's is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    state: State,
    /// `get_last_lr()[0]`.
    lr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum State {
    Chainable(Chainable),
    OneCycle(OneCycle),
    Sequential { schedulers: Vec<Chainable>, milestones: Vec<usize>, last_epoch: i64 },
    Plateau(Plateau),
}

/// StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR or LinearLR:
/// `base_lrs[0]` and `last_epoch`; the current lr is the optimizer's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chainable {
    config: SchedulerConfig,
    base_lr: f64,
    last_epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OneCycle {
    config: SchedulerConfig,
    total_steps: usize,
    /// The group's `initial_lr`, `max_lr` and `min_lr`.
    lrs: (f64, f64, f64),
    last_epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plateau {
    config: SchedulerConfig,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
    last_epoch: i64,
}

impl Scheduler {
    /// `Scheduler(optimizer, ...)`: records the optimizer's lr as `base_lr`
    /// and takes the initial step, setting the optimizer's lr (and, for
    /// OneCycleLR, its momentum). OneCycleLR needs its `total_steps`.
    pub fn new(
        config: SchedulerConfig,
        optimizer: &mut Optimizer,
    ) -> Result<Scheduler, ScheduleError> {
        let lr = optimizer.lr();
        // Nothing stepped yet: `last_epoch` -1 (SequentialLR's own and
        // ReduceLROnPlateau's start at 0), the optimizer's lr as `base_lr`.
        let (last_epoch, sequence) = match &config {
            SchedulerConfig::Sequential { schedulers, .. } => (0, schedulers.len()),
            SchedulerConfig::Plateau { .. } => (0, 0),
            _ => (-1, 0),
        };
        let fresh = SchedulerState {
            last_epoch,
            lr,
            base_lr: lr,
            schedulers_last_epoch: vec![-1; sequence],
            ..SchedulerState::default()
        };
        let mut s = Scheduler::restore(config, &fresh)?;
        if matches!(s.state, State::Plateau(_)) {
            return Ok(s); // no initial step: ReduceLROnPlateau leaves the lr alone
        }
        // _initial_step(). (SequentialLR's sub-schedulers each took theirs
        // when built; SequentialLR sets the lr back to the initial one and
        // undoes their steps, so only its first scheduler's counts.)
        s.lr = match &mut s.state {
            State::Chainable(c) => c.step(lr, true),
            State::OneCycle(o) => o.step(optimizer)?,
            State::Sequential { schedulers, milestones, .. } => {
                let first = milestones.partition_point(|&m| m == 0);
                schedulers[first].step(lr, true)
            }
            State::Plateau(_) => unreachable!("returned above"),
        };
        optimizer.set_lr(s.lr);
        Ok(s)
    }

    /// `scheduler.step()`, or `scheduler.step(metric)` for
    /// ReduceLROnPlateau: the next lr, set on the optimizer. `metric` is
    /// the value ReduceLROnPlateau watches; the others ignore it.
    pub fn step(
        &mut self,
        optimizer: &mut Optimizer,
        metric: Option<f64>,
    ) -> Result<(), ScheduleError> {
        let lr = optimizer.lr();
        self.lr = match &mut self.state {
            State::Chainable(c) => c.step(lr, false),
            State::OneCycle(o) => o.step(optimizer)?,
            State::Sequential { schedulers, milestones, last_epoch } => {
                *last_epoch += 1;
                let e = *last_epoch;
                let idx = milestones.partition_point(|&m| m as i64 <= e); // bisect_right
                let s = &mut schedulers[idx];
                if idx > 0 && milestones[idx - 1] as i64 == e {
                    s.last_epoch = 0; // scheduler._update_lr(0): the closed form at 0
                    s.closed_form()
                } else {
                    s.step(lr, false)
                }
            }
            State::Plateau(p) => {
                let Some(metric) = metric else {
                    return Err(ScheduleError {
                        what: "metric",
                        rule: "given to ReduceLROnPlateau.step",
                    });
                };
                p.step(lr, metric)
            }
        };
        optimizer.set_lr(self.lr);
        Ok(())
    }

    /// `scheduler.get_last_lr()[0]`.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// What `scheduler.state_dict()` holds that changes as it steps.
    pub fn state(&self) -> SchedulerState {
        let mut st = SchedulerState { lr: self.lr, ..SchedulerState::default() };
        match &self.state {
            State::Chainable(c) => (st.last_epoch, st.base_lr) = (c.last_epoch, c.base_lr),
            State::OneCycle(o) => st.last_epoch = o.last_epoch,
            State::Sequential { schedulers, last_epoch, .. } => {
                st.last_epoch = *last_epoch;
                st.base_lr = schedulers.first().map_or(0.0, |s| s.base_lr);
                st.schedulers_last_epoch = schedulers.iter().map(|s| s.last_epoch).collect();
            }
            State::Plateau(p) => {
                st.last_epoch = p.last_epoch;
                st.best = p.best.is_finite().then_some(p.best);
                (st.num_bad_epochs, st.cooldown_counter) = (p.num_bad_epochs, p.cooldown_counter);
            }
        }
        st
    }

    /// `scheduler.load_state_dict(...)`: a scheduler of `config` (OneCycleLR's
    /// `total_steps` given) in `state`, without an initial step; the
    /// optimizer's lr is the caller's to restore (it is the optimizer's state).
    pub fn restore(
        config: SchedulerConfig,
        state: &SchedulerState,
    ) -> Result<Scheduler, ScheduleError> {
        config.check()?;
        let bad = |what, rule| Err(ScheduleError { what, rule });
        let st = state;
        let state = match &config {
            SchedulerConfig::OneCycle {
                max_lr, total_steps, div_factor, final_div_factor, ..
            } => {
                let Some(total_steps) = *total_steps else {
                    return bad("total_steps", "given");
                };
                let initial = max_lr / div_factor;
                let lrs = (initial, *max_lr, initial / final_div_factor);
                State::OneCycle(OneCycle { config, total_steps, lrs, last_epoch: st.last_epoch })
            }
            SchedulerConfig::Sequential { schedulers, milestones } => {
                if st.schedulers_last_epoch.len() != schedulers.len() {
                    return bad("the saved SequentialLR state", "one last_epoch per scheduler");
                }
                State::Sequential {
                    schedulers: schedulers
                        .iter()
                        .zip(&st.schedulers_last_epoch)
                        .map(|(c, &e)| Chainable {
                            config: c.clone(),
                            base_lr: st.base_lr,
                            last_epoch: e,
                        })
                        .collect(),
                    milestones: milestones.clone(),
                    last_epoch: st.last_epoch,
                }
            }
            SchedulerConfig::Plateau { mode, .. } => {
                let worse = match mode {
                    PlateauMode::Min => f64::INFINITY,
                    PlateauMode::Max => f64::NEG_INFINITY,
                };
                State::Plateau(Plateau {
                    config,
                    best: st.best.unwrap_or(worse),
                    num_bad_epochs: st.num_bad_epochs,
                    cooldown_counter: st.cooldown_counter,
                    last_epoch: st.last_epoch,
                })
            }
            _ => State::Chainable(Chainable {
                config,
                base_lr: st.base_lr,
                last_epoch: st.last_epoch,
            }),
        };
        Ok(Scheduler { state, lr: st.lr })
    }
}

/// A scheduler's state as it steps (see [`Scheduler::state`]), in
/// `torch.optim.lr_scheduler`'s terms; each scheduler uses its part.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SchedulerState {
    /// `last_epoch` (SequentialLR's own).
    pub last_epoch: i64,
    /// `get_last_lr()[0]`.
    pub lr: f64,
    /// `base_lrs[0]` (the chainable ones and SequentialLR's).
    #[serde(default)]
    pub base_lr: f64,
    /// SequentialLR: each scheduler's `last_epoch`.
    #[serde(default)]
    pub schedulers_last_epoch: Vec<i64>,
    /// ReduceLROnPlateau: `best` (`None` before a finite one: its
    /// `mode_worse`, an infinity JSON cannot hold), `num_bad_epochs`,
    /// `cooldown_counter`.
    #[serde(default)]
    pub best: Option<f64>,
    #[serde(default)]
    pub num_bad_epochs: usize,
    #[serde(default)]
    pub cooldown_counter: usize,
}

impl Chainable {
    /// `step()`: the next lr from the current one (`_initial_step` when
    /// `initial`).
    fn step(&mut self, lr: f64, initial: bool) -> f64 {
        self.last_epoch += 1;
        self.get_lr(lr, initial)
    }

    /// PyTorch 2.13's `get_lr`, from the current lr (`group["lr"]`).
    fn get_lr(&self, lr: f64, initial: bool) -> f64 {
        let e = self.last_epoch;
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
            _ => unreachable!("only chainable schedulers are built as Chainable"),
        }
    }

    /// PyTorch 2.13's `_get_closed_form_lr` at `last_epoch` (what
    /// SequentialLR uses at a milestone).
    fn closed_form(&self) -> f64 {
        let (base, e) = (self.base_lr, self.last_epoch);
        match &self.config {
            // (Python's `float ** int` is C's pow: powf, not powi.)
            SchedulerConfig::Step { step_size, gamma } => {
                base * gamma.powf(e.div_euclid(*step_size as i64) as f64)
            }
            SchedulerConfig::MultiStep { milestones, gamma } => {
                base * gamma.powf(milestones.partition_point(|&m| m as i64 <= e) as f64)
            }
            SchedulerConfig::Exponential { gamma } => base * gamma.powf(e as f64),
            SchedulerConfig::Cosine { t_max, eta_min } => {
                let pi = std::f64::consts::PI;
                eta_min + (base - eta_min) * (1.0 + (pi * e as f64 / *t_max as f64).cos()) / 2.0
            }
            SchedulerConfig::Linear { start_factor, end_factor, total_iters } => {
                base * (start_factor
                    + (end_factor - start_factor) * (*total_iters).min(e.max(0) as usize) as f64
                        / *total_iters as f64)
            }
            _ => unreachable!("only chainable schedulers are built as Chainable"),
        }
    }
}

impl OneCycle {
    /// `step()`: PyTorch's `get_lr`, which also sets the momentum.
    fn step(&mut self, optimizer: &mut Optimizer) -> Result<f64, ScheduleError> {
        let SchedulerConfig::OneCycle {
            pct_start,
            anneal_strategy,
            cycle_momentum,
            base_momentum,
            max_momentum,
            three_phase,
            ..
        } = &self.config
        else {
            unreachable!("a OneCycle state holds a OneCycle config")
        };
        self.last_epoch += 1;
        let step = self.last_epoch;
        if step > self.total_steps as i64 {
            return Err(ScheduleError {
                what: "the number of OneCycleLR steps",
                rule: "at most total_steps",
            });
        }
        let (initial, max, min) = self.lrs;
        let (base_m, max_m) = (*base_momentum, *max_momentum);
        // (end_step, start_lr, end_lr, start_momentum, end_momentum)
        let ends = one_cycle_ends(self.total_steps, *pct_start, *three_phase);
        let phases: Vec<(f64, f64, f64, f64, f64)> = if *three_phase {
            vec![
                (ends[0], initial, max, max_m, base_m),
                (ends[1], max, initial, base_m, max_m),
                (ends[2], initial, min, max_m, max_m),
            ]
        } else {
            vec![(ends[0], initial, max, max_m, base_m), (ends[1], max, min, base_m, max_m)]
        };
        let anneal = |start: f64, end: f64, pct: f64| match anneal_strategy {
            Anneal::Cos => end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        };
        let mut start_step = 0.0;
        let last = phases.len() - 1;
        for (i, &(end_step, start_lr, end_lr, start_m, end_m)) in phases.iter().enumerate() {
            if step as f64 <= end_step || i == last {
                let pct = (step as f64 - start_step) / (end_step - start_step);
                if *cycle_momentum {
                    optimizer.set_momentum(anneal(start_m, end_m, pct));
                }
                return Ok(anneal(start_lr, end_lr, pct));
            }
            start_step = end_step;
        }
        unreachable!("the last phase is always taken")
    }
}

impl Plateau {
    /// `step(metrics)`: the lr after this epoch's metric.
    fn step(&mut self, lr: f64, current: f64) -> f64 {
        let SchedulerConfig::Plateau {
            mode,
            factor,
            patience,
            threshold,
            threshold_mode,
            cooldown,
            min_lr,
            eps,
        } = &self.config
        else {
            unreachable!("a Plateau state holds a Plateau config")
        };
        self.last_epoch += 1;
        let better = match (mode, threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => current < self.best * (1.0 - threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => current < self.best - threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => current > self.best * (threshold + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => current > self.best + threshold,
        };
        if better {
            self.best = current;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0; // bad epochs in cooldown do not count
        }
        if self.num_bad_epochs > *patience {
            self.cooldown_counter = *cooldown;
            self.num_bad_epochs = 0;
            let new_lr = (lr * factor).max(*min_lr);
            if lr - new_lr > *eps {
                return new_lr;
            }
        }
        lr
    }
}
