// The exact fast step of src/step.rs (`ManualStep`): the ATen kernels that
// autograd runs for `F.cross_entropy(F.linear(x, W, b), y, weight)` (mean
// reduction, no label smoothing) and its `loss.backward()`, called directly
// in the same order with the same arguments, in one call from Rust instead
// of ten tch wrappers. No C++ exception crosses into Rust.
#include "below_autograd.h"
#include "error.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/_log_softmax_backward_data.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/nll_loss_backward.h>
#include <ATen/ops/nll_loss_forward.h>
#include <ATen/ops/sum.h>
#include <array>
#include <exception>
#include <optional>

extern "C" {

// Writes dL/dW into w_grad and dL/db into b_grad (both overwritten, never
// reallocated) and returns the loss as a new tensor (owned by the caller,
// as tch's C API hands out tensors); nullptr on an error. The step's large
// intermediates go into the caller's buffers (buf[0..4]: logits, log_p and
// the two gradients; resized to the batch, kept between steps): the same
// kernels as the functional calls autograd makes (their `out=` forms), so
// the same bits, without allocating and page-faulting ~4 x N x C floats a
// step. `one` is the scalar 1 that seeds loss.backward().
at::Tensor* ce_linear_cross_entropy_step(const at::Tensor* x, const at::Tensor* y,
                                         const at::Tensor* w, const at::Tensor* b,
                                         const at::Tensor* class_weight,  // may be null
                                         at::Tensor* w_grad, at::Tensor* b_grad,
                                         at::Tensor* const* buf, const at::Tensor* one) {
  try {
    ce::BelowAutograd below;  // (below_autograd.h)
    std::optional<at::Tensor> weight;
    if (class_weight != nullptr) weight = *class_weight;
    at::Tensor& out = *buf[0];
    at::Tensor& log_p = *buf[1];
    at::Tensor& g_nll = *buf[2];
    at::Tensor& g_out = *buf[3];
    // Sized here (keeping their storage when it is large enough): an out=
    // kernel that had to resize a non-empty output would print libtorch's
    // deprecation warning on every change of batch size.
    const std::array<int64_t, 2> shape{x->size(0), w->size(0)};
    for (at::Tensor* t : {&out, &log_p, &g_nll, &g_out}) {
      if (t->sizes() != at::IntArrayRef(shape)) t->resize_(shape);
    }
    // forward: F.linear (2-D input with a bias) is addmm(b, x, W.t());
    // F.cross_entropy is log_softmax over dim 1, then nll_loss.
    at::addmm_out(out, *b, *x, w->t());
    at::log_softmax_out(log_p, out, 1, out.scalar_type());
    auto [loss, total_weight] = at::nll_loss_forward(log_p, *y, weight, at::Reduction::Mean, -100);
    // loss.backward(): the seed gradient of a scalar root is ones_like(loss).
    // NllLossBackward0, then LogSoftmaxBackward0:
    at::nll_loss_backward_out(g_nll, *one, log_p, *y, weight, at::Reduction::Mean, -100,
                              total_weight);
    at::_log_softmax_backward_data_out(g_out, g_nll, log_p, 1, out.scalar_type());
    // AddmmBackward0 + TBackward0 for W: mm_mat2_backward picks g.t().mm(x)
    // for W.t()'s strides. The broadcast bias: sum_to(g, [C]), that is
    // g.sum([0], keepdim=true) viewed as [C].
    at::mm_out(*w_grad, g_out.t(), *x);
    at::Tensor b_view = b_grad->view({1, -1});
    at::sum_out(b_view, g_out, {0}, /*keepdim=*/true);
    ce::bump_versions({w_grad, b_grad});
    return new at::Tensor(std::move(loss));
  } catch (const std::exception& e) {
    ce::remember(e.what());
    return nullptr;
  }
}
}
