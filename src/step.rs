//! The exact fast step: the example's backward pass without the autograd
//! engine, bit for bit the gradients of `loss.backward()`.

use crate::model::MyModel;
use tch::nn::Module;
use tch::{Kind, TchError, Tensor};

/// The example's backward pass without the autograd engine: the ATen kernels
/// that autograd runs for `cross_entropy(linear(x, W, b), y)` (mean
/// reduction, no class weights), called in the same order with the same
/// arguments, writing the gradients into `W.grad` and `b.grad` for
/// `optimizer.step()`:
///
/// - `NllLossBackward0`: `nll_loss_backward(1, log_p, y, None, Mean, -100, N)`;
/// - `LogSoftmaxBackward0`: `_log_softmax_backward_data(g, log_p, 1, Float)`;
/// - `AddmmBackward0` + `TBackward0` for `W`: `g.t().mm(x)` (autograd's
///   `mm_mat2_backward` picks this form for `W.t()`'s strides);
/// - the broadcast bias: `sum_to(g, [C])`, that is `g.sum([0], keepdim=true)`.
///
/// So the gradients, and the parameters after `optimizer.step()`, are bit for
/// bit those of `loss.backward()` (tested in `tests/bench.rs`). Never call
/// `optimizer.zero_grad()` in between: it would drop the gradient buffers.
pub struct ManualStep {
    weight_grad: Tensor,
    bias_grad: Tensor,
    /// `total_weight` of `nll_loss_forward`: the number of targets.
    total_weight: Tensor,
}

impl ManualStep {
    /// Creates zero gradients for the model's parameters (one backward of
    /// `0 * (sum W + sum b)`), which later steps overwrite in place.
    pub fn new(model: &MyModel, batch_size: i64) -> Result<ManualStep, TchError> {
        let (w, b) = (model.weight(), model.bias());
        (w.f_sum(Kind::Float)? * 0.0 + b.f_sum(Kind::Float)? * 0.0).f_backward()?;
        let total_weight = Tensor::from(batch_size as f32).f_to_device(w.device())?;
        Ok(ManualStep { weight_grad: w.grad(), bias_grad: b.grad(), total_weight })
    }

    /// Forward and backward of the example's step, into the gradient buffers.
    pub fn gradients(&self, model: &MyModel, inputs: &Tensor, targets: &Tensor) {
        tch::no_grad(|| {
            let outputs = model.forward(inputs);
            let log_p = outputs.log_softmax(-1, Kind::Float);
            let loss = log_p.nll_loss(targets);
            let g = log_p.nll_loss_backward(
                &loss.ones_like(),
                targets,
                None::<Tensor>,
                tch::Reduction::Mean,
                -100,
                &self.total_weight,
            );
            let g = Tensor::internal_log_softmax_backward_data(&g, &log_p, 1, Kind::Float);
            let _ = g.tr().mm_out(&self.weight_grad, inputs);
            let bias_grad = self.bias_grad.view([1, -1]);
            let _ = g.sum_intlist_out(&bias_grad, [0i64].as_slice(), true, None::<Kind>);
        });
    }
}
