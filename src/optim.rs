//! Optimizers whose updates are `torch.optim`'s, bit for bit on the CPU.
//!
//! [`Sgd`], [`Adam`] (also `AdamW`) and [`RmsProp`] run `torch.optim`'s
//! single-tensor path (the default on the CPU) call for call, with its
//! scalars as the doubles Python passes: one C++ call per parameter
//! (`csrc/optim.cpp`), since tch's bindings drop the `alpha=`/`value=`
//! scalars of `add`, `addcmul_` and `addcdiv_`. tch's own `nn::Adam`,
//! `nn::AdamW` and `nn::RmsProp` are libtorch's C++ optimizers, which order
//! the arithmetic otherwise: after a few steps Adam's and AdamW's parameters
//! differ in the low bits, and so do centered RMSprop's (C++ updates the
//! gradient average with `mul_(alpha).add_(grad, 1 - alpha)`, Python with
//! `lerp_(grad, 1 - alpha)`). libtorch's C++ SGD computes `torch.optim.SGD`'s
//! numbers, but keeps its momentum buffers where tch cannot reach them for
//! a checkpoint.
//!
//! ```python
//! optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)   # PyTorch
//! ```
//! ```
//! use cross_entropy_tch::optim::{Optimizer, OptimizerConfig, OptimizerKind};
//! use cross_entropy_tch::MyModel;
//! use tch::nn::{Module, VarStore};
//! use tch::{Device, Kind, Tensor};
//!
//! tch::manual_seed(0);
//! let vs = VarStore::new(Device::Cpu);
//! let model = MyModel::new(&vs.root(), 10, 3);
//! let config = OptimizerConfig::new(OptimizerKind::Adam); // torch.optim's defaults
//! let mut optimizer = Optimizer::build(&vs, &config)?;
//! let x = Tensor::randn([4, 10], (Kind::Float, Device::Cpu));
//! let loss = model.forward(&x).sum(Kind::Float);
//! optimizer.zero_grad();
//! loss.backward();
//! optimizer.step()?;
//! # Ok::<(), tch::TchError>(())
//! ```

use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use tch::nn::{self, OptimizerConfig as _};
use tch::{TchError, Tensor};

/// Which `torch.optim` optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
    RmsProp,
}

impl OptimizerKind {
    /// Every optimizer, in the order `--help` lists them.
    pub const ALL: [OptimizerKind; 4] =
        [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::AdamW, OptimizerKind::RmsProp];

    /// The lower-case name (`sgd`, `adam`, `adamw`, `rmsprop`).
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::RmsProp => "rmsprop",
        }
    }

    /// PyTorch's class: `torch.optim.SGD`, ...
    pub fn torch_name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "SGD",
            OptimizerKind::Adam => "Adam",
            OptimizerKind::AdamW => "AdamW",
            OptimizerKind::RmsProp => "RMSprop",
        }
    }

    /// The default learning rate: `torch.optim`'s, but for SGD, whose 0.5
    /// suits the softmax regression on standardized features that `train`
    /// runs (torch.optim.SGD's own default, 1e-3, barely moves it).
    pub fn default_lr(self) -> f64 {
        match self {
            OptimizerKind::Sgd => 0.5,
            OptimizerKind::Adam | OptimizerKind::AdamW => 1e-3,
            OptimizerKind::RmsProp => 1e-2,
        }
    }

    /// `torch.optim`'s default weight decay: 1e-2 for AdamW, 0 for the rest.
    pub fn default_weight_decay(self) -> f64 {
        match self {
            OptimizerKind::AdamW => 1e-2,
            _ => 0.0,
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OptimizerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OptimizerKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = OptimizerKind::ALL.iter().map(|k| k.name()).collect();
            format!("no optimizer '{s}' (there are {})", names.join(", "))
        })
    }
}

/// An optimizer and its arguments, with `torch.optim`'s names. Arguments
/// that the kind does not take keep their defaults and are not used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizerConfig {
    #[serde(rename = "optimizer")]
    pub kind: OptimizerKind,
    pub lr: f64,
    /// SGD and RMSprop.
    pub momentum: f64,
    /// SGD.
    pub dampening: f64,
    /// SGD.
    pub nesterov: bool,
    /// L2 penalty added to the gradient (SGD, Adam, RMSprop); decoupled
    /// decay of the weights (AdamW).
    pub weight_decay: f64,
    /// Adam and AdamW: the moving averages' coefficients.
    pub betas: (f64, f64),
    /// Adam, AdamW and RMSprop: added to the denominator.
    pub eps: f64,
    /// Adam and AdamW: use the maximum of the second moments so far.
    pub amsgrad: bool,
    /// RMSprop: the smoothing constant.
    pub alpha: f64,
    /// RMSprop: normalize by the centered second moment.
    pub centered: bool,
}

impl OptimizerConfig {
    /// `kind` with `torch.optim`'s defaults (and SGD's lr of
    /// [`OptimizerKind::default_lr`]).
    pub fn new(kind: OptimizerKind) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            lr: kind.default_lr(),
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: kind.default_weight_decay(),
            betas: (0.9, 0.999),
            eps: 1e-8,
            amsgrad: false,
            alpha: 0.99,
            centered: false,
        }
    }

    /// Whether the arguments make sense: finite, non-negative, betas in
    /// [0, 1), nesterov with momentum and no dampening. (`torch.optim`
    /// refuses most of these too; it lets NaN through.)
    pub fn check(&self) -> Result<(), OptimizerError> {
        let bad = |what: &'static str, value: f64, rule: &'static str| {
            Err(OptimizerError::Range { what, value, rule })
        };
        let non_negative = [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("dampening", self.dampening),
            ("weight_decay", self.weight_decay),
            ("eps", self.eps),
            ("alpha", self.alpha),
        ];
        for (what, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return bad(what, value, "finite and >= 0");
            }
        }
        for (what, value) in [("betas[0]", self.betas.0), ("betas[1]", self.betas.1)] {
            if !(0.0..1.0).contains(&value) {
                return bad(what, value, "in [0, 1)");
            }
        }
        if self.kind == OptimizerKind::Sgd
            && self.nesterov
            && (self.momentum <= 0.0 || self.dampening != 0.0)
        {
            let (momentum, dampening) = (self.momentum, self.dampening);
            return Err(OptimizerError::Nesterov { momentum, dampening });
        }
        Ok(())
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::new(OptimizerKind::Sgd)
    }
}

/// An optimizer argument that makes no sense.
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerError {
    /// `what` (an argument's name, `betas[0]` for a beta) is outside `rule`.
    Range { what: &'static str, value: f64, rule: &'static str },
    /// Nesterov momentum without momentum, or with dampening.
    Nesterov { momentum: f64, dampening: f64 },
    /// A saved state that is not this optimizer's.
    State(String),
}

impl OptimizerError {
    /// The argument at fault (`nesterov` for [`OptimizerError::Nesterov`]).
    pub fn argument(&self) -> &'static str {
        match self {
            OptimizerError::Range { what, .. } => what,
            OptimizerError::Nesterov { .. } => "nesterov",
            OptimizerError::State(_) => "state",
        }
    }
}

impl fmt::Display for OptimizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptimizerError::Range { what, value, rule } => {
                write!(f, "{what} must be {rule}, got {value}")
            }
            OptimizerError::Nesterov { momentum, dampening } => write!(
                f,
                "nesterov needs momentum > 0 and dampening 0 (got {momentum} and {dampening}), as torch.optim.SGD does"
            ),
            OptimizerError::State(why) => write!(f, "the optimizer state: {why}"),
        }
    }
}

impl std::error::Error for OptimizerError {}

/// A built optimizer: `optimizer.zero_grad()`, `optimizer.step()`.
pub enum Optimizer {
    /// A tch optimizer and its lr, such as the example's `nn::Sgd` (libtorch's
    /// C++ SGD, already `torch.optim.SGD`'s updates without momentum), which
    /// keeps no state this crate can read: [`Optimizer::build`] never makes
    /// one.
    Tch(nn::Optimizer, f64),
    /// `torch.optim.SGD`, computed as the Python computes it.
    Sgd(Sgd),
    /// `torch.optim.Adam` / `AdamW`, computed as the Python computes it.
    Adam(Adam),
    /// `torch.optim.RMSprop`, computed as the Python computes it.
    RmsProp(RmsProp),
}

impl Optimizer {
    /// `torch.optim.<Kind>(model.parameters(), ...)` over the trainable
    /// variables of `vs`.
    pub fn build(vs: &nn::VarStore, config: &OptimizerConfig) -> Result<Optimizer, TchError> {
        let c = config;
        Ok(match c.kind {
            OptimizerKind::Sgd => Optimizer::Sgd(Sgd::new(vs, c)?),
            OptimizerKind::RmsProp => Optimizer::RmsProp(RmsProp::new(vs, c)?),
            OptimizerKind::Adam | OptimizerKind::AdamW => Optimizer::Adam(Adam::new(vs, c)?),
        })
    }

    /// `optimizer.zero_grad()`: the gradients are set to None (libtorch's
    /// `zero_grad`), as PyTorch does by default.
    pub fn zero_grad(&mut self) {
        match self {
            Optimizer::Tch(o, _) => o.zero_grad(),
            Optimizer::Sgd(o) => o.zero_grad.zero_grad(),
            Optimizer::Adam(a) => a.zero_grad.zero_grad(),
            Optimizer::RmsProp(r) => r.zero_grad.zero_grad(),
        }
    }

    /// `optimizer.step()`.
    pub fn step(&mut self) -> Result<(), TchError> {
        match self {
            Optimizer::Tch(o, _) => {
                o.step();
                Ok(())
            }
            Optimizer::Sgd(o) => o.step(),
            Optimizer::Adam(a) => a.step(),
            Optimizer::RmsProp(r) => r.step(),
        }
    }
}

impl Optimizer {
    /// `optimizer.param_groups[0]["lr"]`.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Tch(_, lr) => *lr,
            Optimizer::Sgd(o) => o.lr,
            Optimizer::Adam(a) => a.lr,
            Optimizer::RmsProp(r) => r.lr,
        }
    }

    /// `for g in optimizer.param_groups: g["lr"] = lr`, what a scheduler does.
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Optimizer::Tch(o, current) => {
                o.set_lr(lr);
                *current = lr;
            }
            Optimizer::Sgd(o) => o.lr = lr,
            Optimizer::Adam(a) => a.lr = lr,
            Optimizer::RmsProp(r) => r.lr = lr,
        }
    }

    /// What OneCycleLR's `cycle_momentum` sets: `group["momentum"]` of SGD
    /// and RMSprop, `group["betas"][0]` of Adam and AdamW.
    pub fn set_momentum(&mut self, momentum: f64) {
        match self {
            Optimizer::Tch(o, _) => o.set_momentum(momentum),
            Optimizer::Sgd(o) => o.momentum = momentum,
            Optimizer::Adam(a) => a.betas.0 = momentum,
            Optimizer::RmsProp(r) => r.momentum = momentum,
        }
    }

    /// `optimizer.state_dict()`, in this crate's terms: the group's lr and
    /// momentum (as schedulers left them) and each parameter's state, with
    /// `torch.optim`'s names. The tensors are copies.
    pub fn state(&self) -> Result<OptimizerState, TchError> {
        let copy = |t: &Tensor| t.f_detach_copy();
        let mut params = Vec::new();
        let (lr, momentum) = match self {
            Optimizer::Tch(_, lr) => (*lr, 0.0), // plain SGD: no state
            Optimizer::Sgd(o) => {
                for s in &o.states {
                    let mut p = ParamState::default();
                    if let Some(buf) = &s.momentum_buffer {
                        p.tensors.push(("momentum_buffer".to_string(), copy(buf)?));
                    }
                    params.push(p);
                }
                (o.lr, o.momentum)
            }
            Optimizer::Adam(a) => {
                for s in &a.states {
                    let mut p = ParamState::default();
                    if s.step > 0.0 {
                        p.step = Some(s.step);
                        p.tensors.push(("exp_avg".to_string(), copy(&s.exp_avg)?));
                        p.tensors.push(("exp_avg_sq".to_string(), copy(&s.exp_avg_sq)?));
                        if let Some(max) = &s.max_exp_avg_sq {
                            p.tensors.push(("max_exp_avg_sq".to_string(), copy(max)?));
                        }
                    }
                    params.push(p);
                }
                (a.lr, a.betas.0)
            }
            Optimizer::RmsProp(r) => {
                for s in &r.states {
                    let mut p = ParamState::default();
                    if s.step > 0 {
                        p.step = Some(s.step as f64);
                        p.tensors.push(("square_avg".to_string(), copy(&s.square_avg)?));
                        if let Some(g) = &s.grad_avg {
                            p.tensors.push(("grad_avg".to_string(), copy(g)?));
                        }
                        if let Some(buf) = &s.momentum_buffer {
                            p.tensors.push(("momentum_buffer".to_string(), copy(buf)?));
                        }
                    }
                    params.push(p);
                }
                (r.lr, r.momentum)
            }
        };
        Ok(OptimizerState { lr, momentum, params })
    }

    /// `optimizer.load_state_dict(...)`: sets the lr, the momentum and each
    /// parameter's state. A state of another optimizer (a buffer it does not
    /// keep, another number of parameters, another shape) is refused and
    /// nothing is changed.
    pub fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimizerError> {
        let bad = |why: String| Err(OptimizerError::State(why));
        let stateless = matches!(self, Optimizer::Tch(..));
        let (names, params): (&[&str], Vec<Tensor>) = match &*self {
            Optimizer::Tch(..) => (&[], vec![]),
            Optimizer::Sgd(o) => {
                (&["momentum_buffer"], o.states.iter().map(|s| s.param.shallow_clone()).collect())
            }
            Optimizer::Adam(a) => (
                &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                a.states.iter().map(|s| s.param.shallow_clone()).collect(),
            ),
            Optimizer::RmsProp(r) => (
                &["square_avg", "grad_avg", "momentum_buffer"],
                r.states.iter().map(|s| s.param.shallow_clone()).collect(),
            ),
        };
        if stateless && state.params.iter().any(|p| !p.tensors.is_empty()) {
            return bad("the file has momentum buffers; plain SGD keeps none".to_string());
        }
        if !stateless && state.params.len() != params.len() {
            return bad(format!(
                "state for {} parameters, the model has {}",
                state.params.len(),
                params.len()
            ));
        }
        for (i, (p, param)) in state.params.iter().zip(&params).enumerate() {
            for (name, t) in &p.tensors {
                if !names.contains(&name.as_str()) {
                    return bad(format!(
                        "parameter {i}: '{name}' is not a buffer of this optimizer"
                    ));
                }
                if t.size() != param.size() {
                    return bad(format!(
                        "parameter {i}: {name} has shape {:?}, the parameter {:?}",
                        t.size(),
                        param.size()
                    ));
                }
            }
        }
        let failed = |e: TchError| OptimizerError::State(e.to_string());
        let device = params.first().map(|p| p.device());
        // The buffer `name` of `p`, on the parameters' device, or None.
        let fetch = |p: &ParamState, name: &str| -> Result<Option<Tensor>, OptimizerError> {
            let Some((_, t)) = p.tensors.iter().find(|(n, _)| n == name) else {
                return Ok(None);
            };
            let t = match device {
                Some(d) => t.f_to_device(d),
                None => Ok(t.shallow_clone()),
            };
            t.and_then(|t| t.f_to_kind(tch::Kind::Float)).map(Some).map_err(failed)
        };
        // A buffer PyTorch makes at the first step: zeros if not saved.
        let or_zeros = |t: Option<Tensor>, like: &Tensor| match t {
            Some(t) => Ok(t),
            None => like.f_zeros_like().map_err(failed),
        };
        match self {
            Optimizer::Tch(o, lr) => {
                o.set_lr(state.lr);
                *lr = state.lr;
            }
            Optimizer::Sgd(o) => {
                for (s, p) in o.states.iter_mut().zip(&state.params) {
                    s.momentum_buffer = fetch(p, "momentum_buffer")?;
                }
                (o.lr, o.momentum) = (state.lr, state.momentum);
            }
            Optimizer::Adam(a) => {
                for (s, p) in a.states.iter_mut().zip(&state.params) {
                    s.step = p.step.unwrap_or(0.0);
                    s.exp_avg = or_zeros(fetch(p, "exp_avg")?, &s.param)?;
                    s.exp_avg_sq = or_zeros(fetch(p, "exp_avg_sq")?, &s.param)?;
                    if s.max_exp_avg_sq.is_some() {
                        s.max_exp_avg_sq = Some(or_zeros(fetch(p, "max_exp_avg_sq")?, &s.param)?);
                    }
                }
                (a.lr, a.betas.0) = (state.lr, state.momentum);
            }
            Optimizer::RmsProp(r) => {
                for (s, p) in r.states.iter_mut().zip(&state.params) {
                    s.step = p.step.unwrap_or(0.0) as u64;
                    s.square_avg = or_zeros(fetch(p, "square_avg")?, &s.param)?;
                    if s.grad_avg.is_some() {
                        s.grad_avg = Some(or_zeros(fetch(p, "grad_avg")?, &s.param)?);
                    }
                    s.momentum_buffer = fetch(p, "momentum_buffer")?;
                }
                (r.lr, r.momentum) = (state.lr, state.momentum);
            }
        }
        Ok(())
    }
}

/// An optimizer's state (see [`Optimizer::state`]).
#[derive(Debug, Default)]
pub struct OptimizerState {
    /// `param_groups[0]["lr"]`.
    pub lr: f64,
    /// `param_groups[0]["momentum"]` (SGD, RMSprop) or `["betas"][0]`
    /// (Adam, AdamW): OneCycleLR changes it.
    pub momentum: f64,
    /// `state[p]` for each parameter, in `model.parameters()`'s order.
    pub params: Vec<ParamState>,
}

/// One parameter's `state[p]`: its step count (Adam, RMSprop) and buffers,
/// empty before its first step.
#[derive(Debug, Default)]
pub struct ParamState {
    pub step: Option<f64>,
    pub tensors: Vec<(String, Tensor)>,
}

/// One state per trainable variable of `vs` (in `model.parameters()`'s
/// order), made by `make(param, zeros)`, where `zeros()` is a fresh
/// `torch.zeros_like(param)`: the `state[p]` of a `torch.optim` optimizer.
fn param_states<S>(
    vs: &nn::VarStore,
    mut make: impl FnMut(Tensor, &dyn Fn() -> Result<Tensor, TchError>) -> Result<S, TchError>,
) -> Result<Vec<S>, TchError> {
    vs.trainable_variables()
        .into_iter()
        .map(|param| {
            let like = param.shallow_clone();
            make(param, &move || like.f_zeros_like())
        })
        .collect()
}

/// A libtorch optimizer over `vs` used only for its `zero_grad`, which sets
/// the gradients to None as PyTorch's does (tch has no other way to reset a
/// gradient).
fn set_to_none(vs: &nn::VarStore) -> Result<nn::Optimizer, TchError> {
    nn::Sgd::default().build(vs, 0.0)
}

/// `torch.optim.SGD` (the default single-tensor path, plain, with momentum,
/// dampening, nesterov and weight decay), operation for operation:
///
/// ```python
/// if weight_decay != 0: grad = grad.add(param, alpha=weight_decay)
/// if momentum != 0:
///     if buf is None: buf = grad.detach().clone()
///     else: buf.mul_(momentum).add_(grad, alpha=1 - dampening)
///     grad = grad.add(buf, alpha=momentum) if nesterov else buf
/// param.add_(grad, alpha=-lr)
/// ```
///
/// That is `csrc/optim.cpp`, one call per parameter, with PyTorch's
/// double scalars (as [`Adam`]). It keeps its momentum buffers where
/// [`Optimizer::state`] can read them (libtorch's C++ SGD keeps them where
/// tch cannot reach), also when the momentum is 0 at first and set later
/// (OneCycleLR's `cycle_momentum`).
pub struct Sgd {
    states: Vec<SgdState>,
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    /// For `zero_grad` (see [`set_to_none`]).
    zero_grad: nn::Optimizer,
}

struct SgdState {
    param: Tensor,
    momentum_buffer: Option<Tensor>,
}

impl Sgd {
    fn new(vs: &nn::VarStore, c: &OptimizerConfig) -> Result<Sgd, TchError> {
        let states = param_states(vs, |param, _| Ok(SgdState { param, momentum_buffer: None }))?;
        Ok(Sgd {
            states,
            lr: c.lr,
            momentum: c.momentum,
            dampening: c.dampening,
            weight_decay: c.weight_decay,
            nesterov: c.nesterov,
            zero_grad: set_to_none(vs)?,
        })
    }

    /// `optimizer.step()`: parameters without a gradient are skipped.
    pub fn step(&mut self) -> Result<(), TchError> {
        for s in &mut self.states {
            let grad = s.param.grad();
            if !grad.defined() {
                continue;
            }
            let mut buf = ptr_or_null(&s.momentum_buffer);
            // SAFETY: live tch tensors for the whole call; the C++ side
            // updates param and the buffer in place, returns a buffer it
            // made in `buf` (owned from here on), and catches every exception.
            let status = unsafe {
                ce_sgd_step(
                    s.param.as_ptr() as *mut _,
                    grad.as_ptr(),
                    &mut buf,
                    self.lr,
                    self.momentum,
                    self.dampening,
                    self.weight_decay,
                    self.nesterov,
                )
            };
            if s.momentum_buffer.is_none() && !buf.is_null() {
                // SAFETY: a new tensor the C++ side handed over.
                s.momentum_buffer = Some(unsafe { Tensor::from_ptr(buf) });
            }
            checked(status)?;
        }
        Ok(())
    }
}

/// One parameter's state: `state[p]` of `torch.optim.Adam`.
struct AdamState {
    param: Tensor,
    /// `state_steps`: PyTorch keeps it in an f32 tensor and reads it back
    /// with `.item()`; the counts agree up to 2^24 steps, where PyTorch's
    /// f32 count stops growing.
    step: f64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

/// `torch.optim.Adam` (and, with `decoupled`, `torch.optim.AdamW`), the
/// default single-tensor path (`foreach=False`, what PyTorch picks on the
/// CPU), operation for operation:
///
/// ```python
/// step_t += 1
/// if weight_decay != 0:
///     if decoupled: param.mul_(1 - lr * weight_decay)              # AdamW
///     else:         grad = grad.add(param, alpha=weight_decay)      # Adam
/// exp_avg.lerp_(grad, 1 - beta1)
/// exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
/// bias_correction1 = 1 - beta1 ** step
/// bias_correction2 = 1 - beta2 ** step
/// step_size = lr / bias_correction1
/// bias_correction2_sqrt = bias_correction2 ** 0.5
/// if amsgrad: torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
/// denom = ((max_exp_avg_sqs[i] if amsgrad else exp_avg_sq).sqrt() / bias_correction2_sqrt).add_(eps)
/// param.addcdiv_(exp_avg, denom, value=-step_size)
/// ```
///
/// That is `csrc/optim.cpp`, one call per parameter: the same ATen calls
/// with the same Python-float (double) scalars as PyTorch's, so the same
/// bits by construction (tch's bindings drop the `value=`/`alpha=` scalars
/// of `addcmul_`, `addcdiv_` and `add`, and each tch call of a small tensor
/// costs about 1.5 us; an Adam step was 10 of them per parameter).
pub struct Adam {
    states: Vec<AdamState>,
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    decoupled: bool,
    eps: f64,
    /// For `zero_grad` (see [`set_to_none`]).
    zero_grad: nn::Optimizer,
}

impl Adam {
    fn new(vs: &nn::VarStore, c: &OptimizerConfig) -> Result<Adam, TchError> {
        let states = param_states(vs, |param, zeros| {
            Ok(AdamState {
                step: 0.0,
                exp_avg: zeros()?,
                exp_avg_sq: zeros()?,
                max_exp_avg_sq: if c.amsgrad { Some(zeros()?) } else { None },
                param,
            })
        })?;
        Ok(Adam {
            states,
            lr: c.lr,
            betas: c.betas,
            weight_decay: c.weight_decay,
            decoupled: c.kind == OptimizerKind::AdamW,
            eps: c.eps,
            zero_grad: set_to_none(vs)?,
        })
    }

    /// `optimizer.step()`: parameters without a gradient are skipped.
    pub fn step(&mut self) -> Result<(), TchError> {
        let (lr, (beta1, beta2), wd) = (self.lr, self.betas, self.weight_decay);
        for s in &mut self.states {
            let grad = s.param.grad();
            if !grad.defined() {
                continue;
            }
            s.step += 1.0; // step_t += 1

            // SAFETY: live tch tensors (or null without amsgrad) for the whole
            // call; the C++ side updates param and the moments in place and
            // catches every exception.
            checked(unsafe {
                ce_adam_step(
                    s.param.as_ptr() as *mut _,
                    grad.as_ptr(),
                    s.exp_avg.as_ptr() as *mut _,
                    s.exp_avg_sq.as_ptr() as *mut _,
                    ptr_or_null(&s.max_exp_avg_sq),
                    s.step,
                    lr,
                    beta1,
                    beta2,
                    self.eps,
                    wd,
                    self.decoupled,
                )
            })?;
        }
        Ok(())
    }
}

/// An optional state tensor as `csrc/optim.cpp` takes it: null for none.
fn ptr_or_null(t: &Option<Tensor>) -> *mut torch_sys::C_tensor {
    t.as_ref().map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut _)
}

/// The status of a `csrc/optim.cpp` step: 0, or -1 after a C++ exception,
/// whose message becomes the error.
fn checked(status: std::os::raw::c_int) -> Result<(), TchError> {
    match status {
        0 => Ok(()),
        _ => Err(TchError::Torch(crate::ffi::last_error())),
    }
}

extern "C" {
    fn ce_adam_step(
        param: *mut torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        exp_avg: *mut torch_sys::C_tensor,
        exp_avg_sq: *mut torch_sys::C_tensor,
        max_exp_avg_sq: *mut torch_sys::C_tensor,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled_weight_decay: bool,
    ) -> std::os::raw::c_int;
    fn ce_sgd_step(
        param: *mut torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        momentum_buffer: *mut *mut torch_sys::C_tensor,
        lr: f64,
        momentum: f64,
        dampening: f64,
        weight_decay: f64,
        nesterov: bool,
    ) -> std::os::raw::c_int;
    fn ce_rmsprop_step(
        param: *mut torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        square_avg: *mut torch_sys::C_tensor,
        grad_avg: *mut torch_sys::C_tensor,
        momentum_buffer: *mut torch_sys::C_tensor,
        lr: f64,
        alpha: f64,
        eps: f64,
        weight_decay: f64,
        momentum: f64,
    ) -> std::os::raw::c_int;
}

/// One parameter's state: `state[p]` of `torch.optim.RMSprop`.
struct RmsPropState {
    param: Tensor,
    square_avg: Tensor,
    grad_avg: Option<Tensor>,
    /// Made at the first step if `momentum > 0` then (OneCycleLR may set
    /// it before that step), as PyTorch's lazy state init does.
    momentum_buffer: Option<Tensor>,
    /// `state["step"]`.
    step: u64,
}

/// `torch.optim.RMSprop`, the default single-tensor path, operation for
/// operation (`csrc/optim.cpp`, one call per parameter, as [`Adam`]):
///
/// ```python
/// if weight_decay != 0: grad = grad.add(param, alpha=weight_decay)
/// square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
/// if centered:
///     grad_avg.lerp_(grad, 1 - alpha)
///     avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
/// else:
///     avg = square_avg.sqrt()
/// avg = avg.add_(eps)
/// if momentum > 0:
///     buf.mul_(momentum).addcdiv_(grad, avg)
///     param.add_(buf, alpha=-lr)
/// else:
///     param.addcdiv_(grad, avg, value=-lr)
/// ```
pub struct RmsProp {
    states: Vec<RmsPropState>,
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    /// For `zero_grad` (see [`set_to_none`]).
    zero_grad: nn::Optimizer,
}

impl RmsProp {
    fn new(vs: &nn::VarStore, c: &OptimizerConfig) -> Result<RmsProp, TchError> {
        let states = param_states(vs, |param, zeros| {
            Ok(RmsPropState {
                square_avg: zeros()?,
                grad_avg: if c.centered { Some(zeros()?) } else { None },
                momentum_buffer: None,
                step: 0,
                param,
            })
        })?;
        Ok(RmsProp {
            states,
            lr: c.lr,
            alpha: c.alpha,
            eps: c.eps,
            weight_decay: c.weight_decay,
            momentum: c.momentum,
            zero_grad: set_to_none(vs)?,
        })
    }

    /// `optimizer.step()`: parameters without a gradient are skipped.
    pub fn step(&mut self) -> Result<(), TchError> {
        for s in &mut self.states {
            let grad = s.param.grad();
            if !grad.defined() {
                continue;
            }
            if s.step == 0 && self.momentum > 0.0 {
                s.momentum_buffer = Some(s.param.f_zeros_like()?);
            }
            if self.momentum > 0.0 && s.momentum_buffer.is_none() {
                // PyTorch fails here too (a KeyError): it makes the buffer
                // only at a first step with momentum.
                return Err(TchError::Torch(
                    "RMSprop's momentum was 0 at its first step, so it has no momentum buffer"
                        .to_string(),
                ));
            }
            s.step += 1; // step += 1

            // SAFETY: live tch tensors (or null where the state has none) for
            // the whole call; the C++ side updates param and the state in
            // place and catches every exception.
            checked(unsafe {
                ce_rmsprop_step(
                    s.param.as_ptr() as *mut _,
                    grad.as_ptr(),
                    s.square_avg.as_ptr() as *mut _,
                    ptr_or_null(&s.grad_avg),
                    ptr_or_null(&s.momentum_buffer),
                    self.lr,
                    self.alpha,
                    self.eps,
                    self.weight_decay,
                    self.momentum,
                )
            })?;
        }
        Ok(())
    }
}

/// The norm `clip_grad_norm_` measures gradients with: `norm_type` 1, 2 or
/// inf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormType {
    #[serde(rename = "1")]
    One,
    #[serde(rename = "2")]
    Two,
    #[serde(rename = "inf")]
    Inf,
}

impl NormType {
    /// The `ord` libtorch's norm takes.
    pub fn ord(self) -> f64 {
        match self {
            NormType::One => 1.0,
            NormType::Two => 2.0,
            NormType::Inf => f64::INFINITY,
        }
    }
}

impl fmt::Display for NormType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NormType::One => "1",
            NormType::Two => "2",
            NormType::Inf => "inf",
        })
    }
}

impl FromStr for NormType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1" => Ok(NormType::One),
            "2" => Ok(NormType::Two),
            "inf" => Ok(NormType::Inf),
            _ => Err(format!("expected a norm type of 1, 2 or inf, got '{s}'")),
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)`, as
/// PyTorch computes it on the CPU: each gradient's norm, the norm of those
/// norms, `clip_coef = max_norm / (total + 1e-6)` (Python's
/// `float / tensor`, which is `tensor.reciprocal() * float`), clamped to 1,
/// and every gradient multiplied by it. All on the device: nothing is read
/// back to the host. Returns the total norm (a 0-dim tensor), as PyTorch
/// does. Parameters without a gradient are left out.
pub fn clip_grad_norm_(
    params: &[Tensor],
    max_norm: f64,
    norm_type: NormType,
) -> Result<Tensor, TchError> {
    let ord = norm_type.ord();
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return Tensor::f_zeros([], (tch::Kind::Float, tch::Device::Cpu));
        }
        // torch._foreach_norm on the CPU is linalg.vector_norm per tensor;
        // tch has linalg_norm, which is vector_norm on a 1-D tensor.
        let norms = grads
            .iter()
            .map(|g| g.f_flatten(0, -1)?.f_linalg_norm(ord, None::<&[i64]>, false, None))
            .collect::<Result<Vec<_>, TchError>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_linalg_norm(ord, None::<&[i64]>, false, None)?;
        let coef = total.f_add_scalar(1e-6)?.f_reciprocal()?.f_mul_scalar(max_norm)?;
        let coef = coef.f_clamp_max(1.0)?;
        for mut g in grads {
            let _ = g.f_mul_(&coef)?;
        }
        Ok(total)
    })
}

/// `torch.nn.utils.clip_grad_value_(params, clip_value)`: every gradient
/// clamped to `[-clip_value, clip_value]` (`clamp_min_` then `clamp_max_`,
/// PyTorch's order).
pub fn clip_grad_value_(params: &[Tensor], clip_value: f64) -> Result<(), TchError> {
    tch::no_grad(|| {
        for p in params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_clamp_min_(-clip_value)?;
                let _ = g.f_clamp_max_(clip_value)?;
            }
        }
        Ok(())
    })
}
