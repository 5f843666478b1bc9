//! The exact fast step: the forward and backward pass of a classifier made
//! of Linear layers (with ReLU and Dropout between them) under
//! `nn.CrossEntropyLoss` without the autograd engine, bit for bit the
//! gradients of `loss.backward()`.

use crate::loss::CrossEntropyLoss;
use crate::model::LinearStack;
use tch::{Kind, Reduction, TchError, Tensor};

extern "C" {
    fn ce_cross_entropy_step(
        x: *const torch_sys::C_tensor,
        y: *const torch_sys::C_tensor,
        layers: i64,
        w: *const *const torch_sys::C_tensor,
        b: *const *const torch_sys::C_tensor,
        dropout: f64,
        class_weight: *const torch_sys::C_tensor,
        label_smoothing: f64,
        w_grad: *const *mut torch_sys::C_tensor,
        b_grad: *const *mut torch_sys::C_tensor,
        buf: *const *mut torch_sys::C_tensor,
        one: *const torch_sys::C_tensor,
    ) -> *mut torch_sys::C_tensor;
    fn ce_cross_entropy_eval(
        x: *const torch_sys::C_tensor,
        y: *const torch_sys::C_tensor,
        layers: i64,
        w: *const *const torch_sys::C_tensor,
        b: *const *const torch_sys::C_tensor,
        class_weight: *const torch_sys::C_tensor,
        label_smoothing: f64,
        buf: *const *mut torch_sys::C_tensor,
        correct: *mut i64,
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

/// The backward pass of `cross_entropy(model(x), y)` without the autograd
/// engine, for a model of Linear layers ([`LinearStack`]: the example's
/// `MyModel`, or `model::Mlp` with its ReLUs and Dropouts): the ATen kernels
/// that autograd runs for it, called in the same order with the same
/// arguments (`csrc/step.cpp`, one call), writing the gradients into each
/// layer's `W.grad` and `b.grad` for `optimizer.step()`:
///
/// - forward, layer by layer: `addmm(b, h, W.t())` (`F.linear`), and between
///   two layers `relu`, then in train mode the Dropout's `empty_like(h)
///   .bernoulli_(1 - p)`, `div_(1 - p)`, `h * noise` (PyTorch's CPU
///   dropout, drawing from the default generator in the same order); then
///   `log_softmax(·, 1)`, `nll_loss_forward` (which also gives the mean's
///   `total_weight`: the batch size, or the sum of the targets' class
///   weights), and with label smoothing ε the smoothing term of ATen's
///   `cross_entropy`, `(1 − ε)·nll + ε/C · Σ −w·log_p / Σ w_y`;
/// - `NllLossBackward0`: `nll_loss_backward(1, log_p, y, weight, Mean, -100,
///   total_weight)`;
/// - with label smoothing, the smoothing term's nodes too (`MulBackward1`,
///   `DivBackward0`, the sums' `expand`s, `MaskedFillBackward0`,
///   `NegBackward0`, with weights `MulBackward0`), added to the NLL
///   gradient where both reach `log_p`;
/// - `LogSoftmaxBackward0`: `_log_softmax_backward_data(g, log_p, 1, Float)`
///   (this and the forward's `log_softmax` through
///   [`crate::log_softmax`]: ATen's bits, about ten times faster under 16
///   classes);
/// - for each layer, last to first: `AddmmBackward0` + `TBackward0` for `W`,
///   `g.t().mm(h)` (autograd's `mm_mat2_backward` picks this form for
///   `W.t()`'s strides); the broadcast bias, `sum_to(g, [out])`, that is
///   `g.sum([0], keepdim=true)`; then, below the first layer, the input's
///   gradient `g.mm(W)` (`mm_mat1_backward`), `MulBackward0` (`g * noise`)
///   and `ReluBackward0` (`threshold_backward(g, relu_out, 0)`).
///
/// So the gradients, and the parameters after `optimizer.step()` (any
/// optimizer, and gradient clipping, which read `.grad`), are bit for bit
/// those of `loss.backward()` (tested in `tests/bench.rs` and
/// `tests/train.rs`). It covers the losses [`ManualStep::covers`] says; a
/// caller falls back to autograd for the rest. Never call
/// `optimizer.zero_grad()` in between: it would drop the gradient buffers.
pub struct ManualStep {
    /// Each layer's `(W.grad, b.grad)`, input to output.
    grads: Vec<(Tensor, Tensor)>,
    /// The Dropout probability between layers, the model's.
    dropout: f64,
    /// The last layer's intermediates (logits, log-probabilities and their
    /// two gradients), resized to the batch and kept between steps: no
    /// allocation, and no page faults, per step.
    buffers: [Tensor; 4],
    /// The evaluation's logits and log-probabilities, likewise kept.
    eval_buffers: [Tensor; 2],
    /// The scalar 1 that seeds `loss.backward()`.
    one: Tensor,
}

impl ManualStep {
    /// Creates zero gradients for the model's parameters (a backward of
    /// `0 * p.sum()` for each), which later steps overwrite in place.
    pub fn new(model: &impl LinearStack) -> Result<ManualStep, TchError> {
        let dropout = model.dropout();
        if !(0.0..1.0).contains(&dropout) {
            // (at::dropout draws nothing at 1 and refuses values outside [0, 1].)
            return Err(TchError::Torch(format!(
                "ManualStep needs a dropout in [0, 1), got {dropout}"
            )));
        }
        let layers = model.linears();
        if layers.is_empty() {
            return Err(TchError::Torch("ManualStep needs a model with layers".to_string()));
        }
        for layer in &layers {
            for p in linear_params(layer)? {
                (p.f_sum(Kind::Float)? * 0.0).f_backward()?; // p.grad = zeros
            }
        }
        let first = &layers[0].ws;
        let empty = || Tensor::f_empty([0], (first.kind(), first.device()));
        Ok(ManualStep {
            grads: layers
                .iter()
                .map(|l| Ok((l.ws.grad(), linear_params(l)?[1].grad())))
                .collect::<Result<_, TchError>>()?,
            dropout,
            buffers: [empty()?, empty()?, empty()?, empty()?],
            eval_buffers: [empty()?, empty()?],
            one: Tensor::f_ones([], (first.kind(), first.device()))?,
        })
    }

    /// Whether this step is exact for `loss`: mean reduction and the
    /// default `ignore_index`, with or without class weights and label
    /// smoothing (what `train` offers).
    pub fn covers(loss: &CrossEntropyLoss) -> bool {
        matches!(loss.reduction_mode(), Reduction::Mean)
            && loss.ignored_index() == CrossEntropyLoss::new().ignored_index()
    }

    /// Forward (in train mode) and backward of one step of `model` (the
    /// model this step was made for) with `loss`'s class weights, into the
    /// gradient buffers; returns the loss, as the forward would. Only for a
    /// loss that [`ManualStep::covers`], with inputs and targets that
    /// `loss` has checked.
    pub fn f_step(
        &self,
        model: &impl LinearStack,
        loss: &CrossEntropyLoss,
        inputs: &Tensor,
        targets: &Tensor,
    ) -> Result<Tensor, TchError> {
        let [w, b] = self.layer_pointers(model, loss)?;
        let w_grad: Vec<_> = self.grads.iter().map(|(g, _)| g.as_ptr() as *mut _).collect();
        let b_grad: Vec<_> = self.grads.iter().map(|(_, g)| g.as_ptr() as *mut _).collect();
        let weight = loss.class_weight().map_or(std::ptr::null(), |w| w.as_ptr());
        let buffers = self.buffers.each_ref().map(|t| t.as_ptr() as *mut torch_sys::C_tensor);
        // SAFETY: every pointer is a live tch tensor (or null for no class
        // weights) for the whole call, and each array holds one tensor per
        // layer; the C++ side writes only the gradient tensors and the
        // buffers (in place, through `out=` kernels), catches every
        // exception, and hands back a new tensor that we own.
        let out = unsafe {
            ce_cross_entropy_step(
                inputs.as_ptr(),
                targets.as_ptr(),
                w.len() as i64,
                w.as_ptr(),
                b.as_ptr(),
                self.dropout,
                weight,
                loss.smoothing(),
                w_grad.as_ptr(),
                b_grad.as_ptr(),
                buffers.as_ptr(),
                self.one.as_ptr(),
            )
        };
        crate::ffi::owned_tensor(out)
    }

    /// The evaluation after an epoch, `model.eval()` and under
    /// `torch.no_grad()`: `loss(model(x), y).item()` and the number of rows
    /// where `model(x).argmax(1) == y`, the same bits as those calls (the
    /// layers' `addmm` and `relu`, no dropout; the step's loss; argmax's
    /// first largest value, a NaN counting as largest), in one call.
    pub fn f_evaluate(
        &self,
        model: &impl LinearStack,
        loss: &CrossEntropyLoss,
        inputs: &Tensor,
        targets: &Tensor,
    ) -> Result<(f32, i64), TchError> {
        let [w, b] = self.layer_pointers(model, loss)?;
        let weight = loss.class_weight().map_or(std::ptr::null(), |w| w.as_ptr());
        let buffers = self.eval_buffers.each_ref().map(|t| t.as_ptr() as *mut torch_sys::C_tensor);
        let mut correct = 0i64;
        // SAFETY: as in `f_step`; the C++ side writes only the two buffers
        // and `correct`.
        let out = unsafe {
            ce_cross_entropy_eval(
                inputs.as_ptr(),
                targets.as_ptr(),
                w.len() as i64,
                w.as_ptr(),
                b.as_ptr(),
                weight,
                loss.smoothing(),
                buffers.as_ptr(),
                &mut correct,
            )
        };
        let loss = crate::ffi::owned_tensor(out)?.f_double_value(&[])? as f32;
        Ok((loss, correct))
    }

    /// Each layer's `W` and `b`, once `loss` and `model` are checked to be
    /// what this step covers and was made for.
    fn layer_pointers(
        &self,
        model: &impl LinearStack,
        loss: &CrossEntropyLoss,
    ) -> Result<[Vec<*const torch_sys::C_tensor>; 2], TchError> {
        if !ManualStep::covers(loss) {
            return Err(TchError::Torch(
                "ManualStep covers mean reduction with the default ignore_index; use loss.backward()".to_string(),
            ));
        }
        let layers = model.linears();
        if layers.len() != self.grads.len() || model.dropout() != self.dropout {
            return Err(TchError::Torch(format!(
                "ManualStep was made for {} layers with dropout {}, the model has {} with dropout {}",
                self.grads.len(),
                self.dropout,
                layers.len(),
                model.dropout()
            )));
        }
        let params = layers.iter().map(|l| linear_params(l)).collect::<Result<Vec<_>, _>>()?;
        Ok([0, 1].map(|i| params.iter().map(|p| p[i].as_ptr()).collect()))
    }

    /// The example's step (`nn.CrossEntropyLoss()`): [`ManualStep::f_step`]
    /// with the plain loss, panicking on an error as tch's calls do.
    pub fn gradients(&self, model: &impl LinearStack, inputs: &Tensor, targets: &Tensor) {
        let _ = self.f_step(model, &CrossEntropyLoss::new(), inputs, targets).unwrap();
    }
}

/// A layer's `[W, b]`: `F.linear` with a bias, as every layer here has.
fn linear_params(layer: &tch::nn::Linear) -> Result<[&Tensor; 2], TchError> {
    match &layer.bs {
        Some(b) => Ok([&layer.ws, b]),
        None => Err(TchError::Torch("ManualStep needs Linear layers with a bias".to_string())),
    }
}
