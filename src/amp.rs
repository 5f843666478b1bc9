//! Automatic mixed precision: `torch.autocast(device_type, dtype)` and
//! `torch.amp.GradScaler`, on libtorch's own autocast (its op lists decide
//! which ops run in the low dtype and which stay in f32, exactly as in
//! PyTorch) and GradScaler's own kernels.
//!
//! ```python
//! scaler = torch.amp.GradScaler("cpu")             # let mut scaler = GradScaler::new(Device::Cpu,
//!                                                  #     GradScalerConfig::default())?;
//! with torch.autocast("cpu", dtype=torch.float16): # let loss = amp::autocast(Device::Cpu,
//!     loss = loss_fn(model(x), y)                  #     AmpDtype::Fp16, || loss_fn.forward(..))?;
//! optimizer.zero_grad()                            # optimizer.zero_grad();
//! scaler.scale(loss).backward()                    # scaler.scale(&loss)?.f_backward()?;
//! scaler.step(optimizer)                           # scaler.step(&mut optimizer, &params)?;
//! scaler.update()                                  # scaler.update()?;
//! ```
//!
//! Why not `tch::autocast`: it returns `f()` untouched when no CUDA device
//! is present (so there is no CPU autocast at all), and it sets the CUDA
//! device type's flag only, with whatever dtype is current (float16), so
//! neither `torch.autocast("cpu", torch.bfloat16)` nor CUDA bf16 can be
//! written with it. [`autocast`] enters and leaves the region the way
//! `torch.autocast.__enter__`/`__exit__` do (`csrc/amp.cpp`): it saves the
//! device type's flag and dtype and the cache flag, sets them, bumps the
//! nesting count, and on the way out clears the cast cache when the
//! outermost region ends and restores them. The state is per thread, as in
//! PyTorch; backward needs no region (autograd replays the dtypes the
//! forward recorded).
//!
//! What autocast does to the example's ops, on the CPU as on CUDA:
//! `nn.Linear` runs in the low dtype (its f32 weights are cast, once per
//! region), ReLU and dropout keep the dtype they get, and
//! `cross_entropy_loss` is on the f32 list: the loss is computed in f32 from
//! the low-precision logits, and the gradients of the f32 parameters are
//! f32.

use crate::optim::Optimizer;
use std::fmt;
use tch::{Device, Kind, TchError, Tensor};

#[repr(C)]
#[derive(Default)]
struct Prev {
    enabled: i32,
    dtype: i32,
    cache_enabled: i32,
}

extern "C" {
    fn ce_autocast_enter(device_type: i32, dtype: i32, prev: *mut Prev) -> i32;
    fn ce_autocast_exit(device_type: i32, prev: *const Prev);
    fn ce_autocast_is_enabled(device_type: i32) -> i32;
    fn ce_amp_non_finite_check_and_unscale(
        grads: *const *mut torch_sys::C_tensor,
        n: i64,
        found_inf: *mut torch_sys::C_tensor,
        inv_scale: *const torch_sys::C_tensor,
    ) -> i32;
}

/// The low-precision dtype of an autocast region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmpDtype {
    /// `torch.bfloat16`: f32's range, 8 bits of mantissa; no scaler needed.
    Bf16,
    /// `torch.float16`: 11 bits of mantissa and a range that small
    /// gradients fall out of: trained with a [`GradScaler`].
    Fp16,
}

impl AmpDtype {
    /// The short names (`bf16`, `fp16`).
    pub fn name(self) -> &'static str {
        match self {
            AmpDtype::Bf16 => "bf16",
            AmpDtype::Fp16 => "fp16",
        }
    }

    /// The name PyTorch gives it (`torch.bfloat16`'s `bfloat16`).
    pub fn torch_name(self) -> &'static str {
        match self {
            AmpDtype::Bf16 => "bfloat16",
            AmpDtype::Fp16 => "float16",
        }
    }

    /// The tch kind of the dtype.
    pub fn kind(self) -> Kind {
        match self {
            AmpDtype::Bf16 => Kind::BFloat16,
            AmpDtype::Fp16 => Kind::Half,
        }
    }

    /// Whether training in this dtype takes a [`GradScaler`], as PyTorch's
    /// AMP recipe has it: fp16 yes (its gradients underflow), bf16 no.
    pub fn needs_scaler(self) -> bool {
        self == AmpDtype::Fp16
    }

    /// c10's ScalarType code (csrc/amp.cpp's argument).
    fn scalar_type(self) -> i32 {
        match self {
            AmpDtype::Bf16 => 15,
            AmpDtype::Fp16 => 5,
        }
    }
}

impl std::str::FromStr for AmpDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bf16" | "bfloat16" => Ok(AmpDtype::Bf16),
            "fp16" | "float16" | "half" => Ok(AmpDtype::Fp16),
            _ => Err(format!("no autocast dtype {s:?} (bf16 or fp16)")),
        }
    }
}

/// Why an autocast region or a scaler call could not be made.
#[derive(Debug)]
pub enum AmpError {
    /// libtorch refused the region (a device type without autocast).
    Refused(String),
    /// A GradScaler setting outside its range (`what` is the field).
    Config { what: &'static str, rule: &'static str },
    /// GradScaler calls out of PyTorch's order (PyTorch raises the same).
    Order(&'static str),
    /// A GradScaler state that cannot be loaded (`what` says why).
    State(String),
    /// libtorch refused a call.
    Torch(TchError),
}

impl fmt::Display for AmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmpError::Refused(why) => write!(f, "autocast: {why}"),
            AmpError::Config { what, rule } => write!(f, "GradScaler {what} must be {rule}"),
            AmpError::Order(what) => write!(f, "GradScaler: {what}"),
            AmpError::State(what) => write!(f, "GradScaler state: {what}"),
            AmpError::Torch(e) => write!(f, "libtorch: {e}"),
        }
    }
}

impl std::error::Error for AmpError {}

impl From<TchError> for AmpError {
    fn from(e: TchError) -> Self {
        AmpError::Torch(e)
    }
}

/// c10's DeviceType code of a tch device (CPU 0, CUDA 1).
fn device_type(device: Device) -> Result<i32, AmpError> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(AmpError::Refused(format!("no autocast for {other:?} here (cpu and cuda)"))),
    }
}

/// `with torch.autocast(device_type, dtype=dtype): f()`: runs `f` with
/// libtorch's autocast on for `device`'s device type. Regions nest and
/// restore what was on before, also when `f` panics.
pub fn autocast<T>(device: Device, dtype: AmpDtype, f: impl FnOnce() -> T) -> Result<T, AmpError> {
    let dev = device_type(device)?;
    let mut prev = Prev::default();
    // SAFETY: `prev` is a valid out-pointer of the C layout above.
    if unsafe { ce_autocast_enter(dev, dtype.scalar_type(), &mut prev) } != 0 {
        return Err(AmpError::Refused(crate::ffi::last_error()));
    }
    struct Exit(i32, Prev);
    impl Drop for Exit {
        fn drop(&mut self) {
            // SAFETY: the state saved by the matching enter.
            unsafe { ce_autocast_exit(self.0, &self.1) }
        }
    }
    let _exit = Exit(dev, prev);
    Ok(f())
}

/// `with torch.autocast(device.type, dtype): f()` where a run has a region
/// (`Some((device, dtype))`), plain `f()` where it runs in f32 (`None`).
pub fn autocast_if<T>(
    region: Option<(Device, AmpDtype)>,
    f: impl FnOnce() -> T,
) -> Result<T, AmpError> {
    match region {
        Some((device, dtype)) => autocast(device, dtype, f),
        None => Ok(f()),
    }
}

/// `torch.is_autocast_enabled(device_type)` on this thread.
pub fn is_enabled(device: Device) -> bool {
    // SAFETY: reads a thread-local flag.
    device_type(device).map(|d| unsafe { ce_autocast_is_enabled(d) } != 0).unwrap_or(false)
}

/// `torch.amp.GradScaler(device, init_scale, growth_factor, backoff_factor,
/// growth_interval)`'s arguments, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GradScalerConfig {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        GradScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl GradScalerConfig {
    /// PyTorch's checks (`growth_factor > 1`, `backoff_factor < 1`), and
    /// what it leaves to fail later: a positive finite scale and interval.
    pub fn check(&self) -> Result<(), AmpError> {
        let bad = |what, rule| Err(AmpError::Config { what, rule });
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return bad("init_scale", "a positive finite number");
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return bad("growth_factor", "a finite number > 1");
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad("backoff_factor", "in (0, 1)");
        }
        if self.growth_interval < 1 {
            return bad("growth_interval", "at least 1");
        }
        Ok(())
    }
}

/// `scaler.state_dict()`: the scale (a Python float of the f32 scale), the
/// factors, the interval and the count of steps since the last backoff or
/// growth (`_growth_tracker`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GradScalerState {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
    pub growth_tracker: i64,
}

impl GradScalerState {
    /// What [`GradScaler::load_state`] takes: a scale that is a positive
    /// finite f32, the factors and the interval as
    /// [`GradScalerConfig::check`] has them, a tracker in `[0, 2^31)` (an
    /// int32 on the device). PyTorch's `load_state_dict` checks none of it.
    pub fn check(&self) -> Result<(), AmpError> {
        let config = GradScalerConfig {
            init_scale: self.scale,
            growth_factor: self.growth_factor,
            backoff_factor: self.backoff_factor,
            growth_interval: self.growth_interval,
        };
        let scale_ok = self.scale > 0.0 && (self.scale as f32).is_finite();
        if !scale_ok {
            return Err(AmpError::State(format!(
                "scale must be a positive finite f32, got {}",
                self.scale
            )));
        }
        config.check().map_err(|e| match e {
            AmpError::Config { what, rule } => AmpError::State(format!("{what} must be {rule}")),
            e => e,
        })?;
        if !(0..=i32::MAX as i64).contains(&self.growth_tracker) {
            return Err(AmpError::State(format!(
                "growth_tracker must be in [0, 2^31), got {}",
                self.growth_tracker
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ready,
    Unscaled,
    Stepped,
}

/// `torch.amp.GradScaler`: scales the loss before backward, unscales the
/// gradients (one `_amp_foreach_non_finite_check_and_unscale_`), skips the
/// optimizer step when any gradient is inf or NaN, and updates the scale
/// with `_amp_update_scale_`: times `backoff_factor` after a skipped step,
/// times `growth_factor` after `growth_interval` steps in a row without one.
pub struct GradScaler {
    config: GradScalerConfig,
    /// `_scale`: f32, 0-dim, on the device.
    scale: Tensor,
    /// `_growth_tracker`: i32, 0-dim, on the device.
    growth_tracker: Tensor,
    /// This iteration's `found_inf` (f32, 1 where a gradient was not finite).
    found_inf: Option<Tensor>,
    stage: Stage,
}

impl GradScaler {
    /// `torch.amp.GradScaler(device.type, **config)`; the scale and the
    /// growth tracker are made at once (PyTorch makes them at the first
    /// `scale()`, with the same values).
    pub fn new(device: Device, config: GradScalerConfig) -> Result<GradScaler, AmpError> {
        config.check()?;
        Ok(GradScaler {
            config,
            // torch.full((), init_scale, dtype=torch.float32)
            scale: Tensor::f_full([], config.init_scale, (Kind::Float, device))?,
            growth_tracker: Tensor::f_full([], 0, (Kind::Int, device))?,
            found_inf: None,
            stage: Stage::Ready,
        })
    }

    /// `scaler.scale(loss)`: `loss * scale`.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor, AmpError> {
        Ok(loss.f_mul(&self.scale.f_to_device(loss.device())?)?)
    }

    /// `scaler.unscale_(optimizer)`: every defined gradient of `params`
    /// times `1 / scale` (the reciprocal taken in f64, then rounded to f32,
    /// as PyTorch does), and the check for inf/NaN. Before clipping.
    pub fn unscale_(&mut self, params: &[Tensor]) -> Result<(), AmpError> {
        match self.stage {
            Stage::Unscaled => {
                return Err(AmpError::Order(
                    "unscale_() has already been called on this optimizer since the last update()",
                ))
            }
            Stage::Stepped => {
                return Err(AmpError::Order("unscale_() is being called after step()"))
            }
            Stage::Ready => {}
        }
        let _no_grad = tch::no_grad_guard();
        // self._scale.double().reciprocal().float()
        let inv_scale =
            self.scale.f_to_kind(Kind::Double)?.f_reciprocal()?.f_to_kind(Kind::Float)?;
        let mut found_inf = Tensor::f_full([], 0.0, (Kind::Float, self.scale.device()))?;
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        if grads.iter().any(|g| g.kind() == Kind::Half) {
            return Err(AmpError::Order("Attempting to unscale FP16 gradients."));
        }
        // One call per (device, dtype) in PyTorch: here every gradient is
        // on the scaler's device, and f32 (of f32 parameters) or the
        // kernel refuses the mix.
        let mut by_kind: Vec<(Kind, Vec<*mut torch_sys::C_tensor>)> = Vec::new();
        for g in &grads {
            match by_kind.iter_mut().find(|(k, _)| *k == g.kind()) {
                Some((_, list)) => list.push(g.as_ptr() as *mut _),
                None => by_kind.push((g.kind(), vec![g.as_ptr() as *mut _])),
            }
        }
        for (_, list) in &by_kind {
            // SAFETY: live tensors (held by `grads`, `found_inf` and
            // `inv_scale` for the whole call), updated in place.
            let status = unsafe {
                ce_amp_non_finite_check_and_unscale(
                    list.as_ptr(),
                    list.len() as i64,
                    found_inf.as_mut_ptr(),
                    inv_scale.as_ptr(),
                )
            };
            if status != 0 {
                return Err(AmpError::Torch(TchError::Torch(crate::ffi::last_error())));
            }
        }
        self.found_inf = Some(found_inf);
        self.stage = Stage::Unscaled;
        Ok(())
    }

    /// `scaler.step(optimizer)`: unscales first unless `unscale_` was
    /// called, then `optimizer.step()` unless a gradient was inf or NaN.
    /// Returns whether the step was taken.
    pub fn step(&mut self, optimizer: &mut Optimizer, params: &[Tensor]) -> Result<bool, AmpError> {
        if self.stage == Stage::Stepped {
            return Err(AmpError::Order("step() has already been called since the last update()"));
        }
        if self.stage == Stage::Ready {
            self.unscale_(params)?;
        }
        let found = match &self.found_inf {
            Some(f) => f.f_double_value(&[])?,
            None => return Err(AmpError::Order("No inf checks were recorded for this optimizer.")),
        };
        let stepped = found == 0.0;
        if stepped {
            optimizer.step()?;
        }
        self.stage = Stage::Stepped;
        Ok(stepped)
    }

    /// `scaler.update()`: `_amp_update_scale_` with this iteration's check.
    pub fn update(&mut self) -> Result<(), AmpError> {
        let Some(found_inf) = self.found_inf.take() else {
            return Err(AmpError::Order("No inf checks were recorded prior to update."));
        };
        let c = self.config;
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &found_inf,
            c.growth_factor,
            c.backoff_factor,
            c.growth_interval,
        )?;
        self.stage = Stage::Ready;
        Ok(())
    }

    /// `scaler.get_scale()`.
    pub fn get_scale(&self) -> Result<f64, AmpError> {
        Ok(self.scale.f_double_value(&[])?)
    }

    /// `scaler.state_dict()`.
    pub fn state(&self) -> Result<GradScalerState, AmpError> {
        let c = self.config;
        Ok(GradScalerState {
            scale: self.get_scale()?,
            growth_factor: c.growth_factor,
            backoff_factor: c.backoff_factor,
            growth_interval: c.growth_interval,
            growth_tracker: self.growth_tracker.f_int64_value(&[])?,
        })
    }

    /// `scaler.load_state_dict(state)`, after [`GradScalerState::check`]
    /// (a state it refuses changes nothing).
    pub fn load_state(&mut self, state: &GradScalerState) -> Result<(), AmpError> {
        state.check()?;
        self.scale = self.scale.f_fill_(state.scale)?;
        self.growth_tracker = self.growth_tracker.f_fill_(state.growth_tracker)?;
        self.config = GradScalerConfig {
            growth_factor: state.growth_factor,
            backoff_factor: state.backoff_factor,
            growth_interval: state.growth_interval,
            ..self.config
        };
        Ok(())
    }
}
