//! The exact fast step: the backward pass of a one-Linear classifier under
//! `nn.CrossEntropyLoss` without the autograd engine, bit for bit the
//! gradients of `loss.backward()`.

use crate::loss::CrossEntropyLoss;
use crate::model::MyModel;
use tch::{Kind, Reduction, TchError, Tensor};

extern "C" {
    fn ce_linear_cross_entropy_step(
        x: *const torch_sys::C_tensor,
        y: *const torch_sys::C_tensor,
        w: *const torch_sys::C_tensor,
        b: *const torch_sys::C_tensor,
        class_weight: *const torch_sys::C_tensor,
        w_grad: *mut torch_sys::C_tensor,
        b_grad: *mut torch_sys::C_tensor,
        buf: *const *mut torch_sys::C_tensor,
        one: *const torch_sys::C_tensor,
    ) -> *mut torch_sys::C_tensor;
}

/// The backward pass a training step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backward {
    /// `loss.backward()`: libtorch's autograd engine.
    Autograd,
    /// [`ManualStep`]: the same kernels, called directly.
    Manual,
}

impl Backward {
    pub const ALL: [Backward; 2] = [Backward::Autograd, Backward::Manual];

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Backward::Autograd => "autograd",
            Backward::Manual => "manual",
        }
    }
}

impl std::fmt::Display for Backward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backward {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backward::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("expected autograd or manual, got '{s}'"))
    }
}

/// The backward pass of `cross_entropy(linear(x, W, b), y)` without the
/// autograd engine: the ATen kernels that autograd runs for it, called in the
/// same order with the same arguments (`csrc/step.cpp`, one call), writing
/// the gradients into `W.grad` and `b.grad` for `optimizer.step()`:
///
/// - forward: `addmm(b, x, W.t())`, `log_softmax(·, 1)`, `nll_loss_forward`
///   (which also gives the mean's `total_weight`: the batch size, or the sum
///   of the targets' class weights);
/// - `NllLossBackward0`: `nll_loss_backward(1, log_p, y, weight, Mean, -100,
///   total_weight)`;
/// - `LogSoftmaxBackward0`: `_log_softmax_backward_data(g, log_p, 1, Float)`;
/// - `AddmmBackward0` + `TBackward0` for `W`: `g.t().mm(x)` (autograd's
///   `mm_mat2_backward` picks this form for `W.t()`'s strides);
/// - the broadcast bias: `sum_to(g, [C])`, that is `g.sum([0], keepdim=true)`.
///
/// So the gradients, and the parameters after `optimizer.step()` (any
/// optimizer, and gradient clipping, which read `.grad`), are bit for bit
/// those of `loss.backward()` (tested in `tests/bench.rs` and
/// `tests/train.rs`). It covers the losses [`ManualStep::covers`] says; a
/// caller falls back to autograd for the rest. Never call
/// `optimizer.zero_grad()` in between: it would drop the gradient buffers.
pub struct ManualStep {
    weight_grad: Tensor,
    bias_grad: Tensor,
    /// The step's intermediates (logits, log-probabilities and their two
    /// gradients), resized to the batch and kept between steps: no
    /// allocation, and no page faults, per step.
    buffers: [Tensor; 4],
    /// The scalar 1 that seeds `loss.backward()`.
    one: Tensor,
}

impl ManualStep {
    /// Creates zero gradients for the model's parameters (one backward of
    /// `0 * (sum W + sum b)`), which later steps overwrite in place.
    pub fn new(model: &MyModel) -> Result<ManualStep, TchError> {
        let (w, b) = (model.weight(), model.bias());
        (w.f_sum(Kind::Float)? * 0.0 + b.f_sum(Kind::Float)? * 0.0).f_backward()?;
        let empty = || Tensor::f_empty([0], (w.kind(), w.device()));
        Ok(ManualStep {
            weight_grad: w.grad(),
            bias_grad: b.grad(),
            buffers: [empty()?, empty()?, empty()?, empty()?],
            one: Tensor::f_ones([], (w.kind(), w.device()))?,
        })
    }

    /// Whether this step is exact for `loss`: mean reduction, no label
    /// smoothing and the default `ignore_index` (class weights are covered).
    /// Label smoothing adds nine more autograd nodes to the backward; it
    /// runs through autograd.
    pub fn covers(loss: &CrossEntropyLoss) -> bool {
        matches!(loss.reduction_mode(), Reduction::Mean)
            && loss.smoothing() == 0.0
            && loss.ignored_index() == CrossEntropyLoss::new().ignored_index()
    }

    /// Forward and backward of one step with `loss`'s class weights, into
    /// the gradient buffers; returns the loss, as the forward would. Only
    /// for a loss that [`ManualStep::covers`], with inputs and targets that
    /// `loss` has checked.
    pub fn f_step(
        &self,
        model: &MyModel,
        loss: &CrossEntropyLoss,
        inputs: &Tensor,
        targets: &Tensor,
    ) -> Result<Tensor, TchError> {
        if !ManualStep::covers(loss) {
            return Err(TchError::Torch(
                "ManualStep covers mean reduction without label smoothing and the default ignore_index; use loss.backward()".to_string(),
            ));
        }
        let weight = loss.class_weight().map_or(std::ptr::null(), |w| w.as_ptr());
        let buffers = self.buffers.each_ref().map(|t| t.as_ptr() as *mut torch_sys::C_tensor);
        // SAFETY: every pointer is a live tch tensor (or null for no class
        // weights) for the whole call; the C++ side writes only the gradient
        // tensors and the buffers (in place, through `out=` kernels), catches
        // every exception, and hands back a new tensor that we own.
        let out = unsafe {
            ce_linear_cross_entropy_step(
                inputs.as_ptr(),
                targets.as_ptr(),
                model.weight().as_ptr(),
                model.bias().as_ptr(),
                weight,
                self.weight_grad.as_ptr() as *mut _,
                self.bias_grad.as_ptr() as *mut _,
                buffers.as_ptr(),
                self.one.as_ptr(),
            )
        };
        if out.is_null() {
            return Err(TchError::Torch(crate::ffi::last_error()));
        }
        // SAFETY: a tensor the C++ side allocated with `new`, as tch's own.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// The example's step (`nn.CrossEntropyLoss()`): [`ManualStep::f_step`]
    /// with the plain loss, panicking on an error as tch's calls do.
    pub fn gradients(&self, model: &MyModel, inputs: &Tensor, targets: &Tensor) {
        let _ = self.f_step(model, &CrossEntropyLoss::new(), inputs, targets).unwrap();
    }
}
