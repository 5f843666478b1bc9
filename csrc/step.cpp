// The exact fast step of src/step.rs (`ManualStep`): the ATen kernels that
// autograd runs for a stack of Linear layers (ReLU and Dropout between
// them, as `model::Mlp`; one Linear is the example's `MyModel`) under
// `F.cross_entropy(·, y, weight, label_smoothing=ε)` (mean reduction, the
// default ignore_index) and its `loss.backward()`, called directly in the same order with the same
// arguments, in one call from Rust instead of tens of tch wrappers and the
// autograd engine. No C++ exception crosses into Rust.
#include "below_autograd.h"
#include "error.h"
#include "log_softmax.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/_log_softmax_backward_data.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/nll_loss_backward.h>
#include <ATen/ops/nll_loss_forward.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>
#include <array>
#include <cmath>
#include <initializer_list>
#include <tuple>
#include <optional>
#include <vector>

namespace {

// AddmmBackward0's gradient for mat1 (the layer's input), with mat2 = W.t():
// autograd's mm_mat1_backward, which answers a column-major mat1 (a 1 x 1
// input is one) in column order.
at::Tensor mat1_backward(const at::Tensor& grad, const at::Tensor& mat2, const at::Tensor& mat1) {
  if (mat1.stride(0) == 1 && mat1.stride(1) == mat1.size(0)) return mat2.mm(grad.t()).t();
  return grad.mm(mat2.t());
}

// The class weights a caller passed, or none for null.
std::optional<at::Tensor> optional_weight(const at::Tensor* class_weight) {
  if (class_weight == nullptr) return std::nullopt;
  return *class_weight;
}

// The hidden layers' forward (all but the last layer): F.linear (2-D input
// with a bias) is addmm(b, h, W.t()); each hidden layer's output goes
// through relu, then (train mode, 0 < p < 1) at::dropout's CPU path: noise
// = empty_like(h).bernoulli_(1 - p), noise.div_(1 - p), h * noise. In eval
// mode (dropout 0) the dropout is the identity. inputs[i] is layer i's
// input, so inputs.back() is the last layer's.
struct Hidden {
  std::vector<at::Tensor> inputs, relu_out, noise;
};

Hidden hidden_forward(const at::Tensor& x, int64_t layers, const at::Tensor* const* w,
                      const at::Tensor* const* b, double dropout) {
  Hidden h{{x}, {}, {}};
  for (int64_t i = 0; i < layers - 1; i++) {
    h.relu_out.push_back(at::relu(at::addmm(*b[i], h.inputs.back(), w[i]->t())));
    if (dropout > 0) {
      h.noise.push_back(at::empty_like(h.relu_out.back()));
      h.noise.back().bernoulli_(1 - dropout);
      h.noise.back().div_(1 - dropout);
      h.inputs.push_back(h.relu_out.back().mul(h.noise.back()));
    } else {
      h.inputs.push_back(h.relu_out.back());
    }
  }
  return h;
}

// Sizes each of `bufs` to rows x classes, keeping its storage when it is
// large enough: an out= kernel that had to resize a non-empty output would
// print libtorch's deprecation warning on every change of batch size.
void size_buffers(std::initializer_list<at::Tensor*> bufs, int64_t rows, int64_t classes) {
  const std::array<int64_t, 2> shape{rows, classes};
  for (at::Tensor* t : bufs) {
    if (t->sizes() != at::IntArrayRef(shape)) t->resize_(shape);
  }
}

// The smoothing term's pieces that its backward reads again (none when
// cross_entropy_forward applied no smoothing).
struct Smoothing {
  at::Tensor ignore_mask, w_row, denom;
  bool applied() const { return denom.defined(); }
};

// F.cross_entropy(logits, y, weight, label_smoothing=eps) from log_p =
// log_softmax(logits, 1), mean reduction, the default ignore_index: the
// NLL loss (nll_loss_forward, which also gives the mean's total_weight),
// and with eps > 0 the calls ATen's cross_entropy_loss_label_smoothing
// makes (as the profiler lists them for PyTorch's own step,
// scripts/trace_step.py). Returns (loss, total_weight); fills `smoothing`
// when eps > 0.
std::tuple<at::Tensor, at::Tensor> cross_entropy_forward(const at::Tensor& log_p,
                                                         const at::Tensor& y,
                                                         const std::optional<at::Tensor>& weight,
                                                         double eps, Smoothing& smoothing) {
  auto [loss, total_weight] = at::nll_loss_forward(log_p, y, weight, at::Reduction::Mean, -100);
  if (!(eps > 0)) return {loss, total_weight};  // (ATen: `if (label_smoothing > 0.0)`)
  const int64_t classes = log_p.size(1);
  at::Tensor& ignore_mask = smoothing.ignore_mask = y.eq(-100);
  at::Tensor smooth;
  if (weight) {
    smoothing.w_row = weight->view({1, classes});
    smooth = log_p.mul(smoothing.w_row).sum({1}).neg();  // -(input * weight_).sum(1)
  } else {
    smooth = log_p.sum({1}).neg();  // -input.sum(1)
  }
  smooth.masked_fill_(ignore_mask, 0.0);
  if (weight) {  // the weights of the targets that are not ignored
    smoothing.denom = weight->gather(0, y.masked_select(ignore_mask.bitwise_not()).flatten()).sum();
  } else {  // the number of targets that are not ignored
    smoothing.denom = ignore_mask.bitwise_not().sum();
  }
  at::Tensor ret = smooth.sum().div(smoothing.denom);
  // (1 - eps) * nllloss + ret * (eps / n_classes)
  loss = loss.mul(1 - eps).add(ret.mul(eps / static_cast<double>(classes)));
  return {loss, total_weight};
}

// The first index of each row's largest value (a NaN counts as largest), as
// argmax(1) answers, compared with the labels: the number of matches.
int64_t count_correct(const at::Tensor& logits, const at::Tensor& y) {
  if (!logits.is_cpu() || logits.scalar_type() != at::kFloat || !logits.is_contiguous() ||
      logits.size(1) == 0 || y.scalar_type() != at::kLong || !y.is_contiguous()) {
    return logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  const float* p = logits.const_data_ptr<float>();
  const int64_t* labels = y.const_data_ptr<int64_t>();
  const int64_t rows = logits.size(0), classes = logits.size(1);
  int64_t correct = 0;
  for (int64_t i = 0; i < rows; i++) {
    const float* row = p + i * classes;
    int64_t best = 0;
    for (int64_t j = 1; j < classes && !std::isnan(row[best]); j++) {
      if (std::isnan(row[j]) || row[j] > row[best]) best = j;
    }
    correct += best == labels[i];
  }
  return correct;
}

}  // namespace

extern "C" {

// One training step's forward and backward through `layers` Linear layers
// (w[i], b[i]; between two layers relu, then dropout with probability
// `dropout` when it is > 0, drawing its mask from the default generator as
// at::dropout does on the CPU). Writes dL/dW_i into w_grad[i] and dL/db_i
// into b_grad[i] (overwritten, never reallocated) and returns the loss as
// a new tensor (owned by the caller, as tch's C API hands out tensors);
// nullptr on an error. The last layer's large intermediates go into the
// caller's buffers (buf[0..4]: logits, log_p and their two gradients;
// resized to the batch, kept between steps): the same kernels as the
// functional calls autograd makes (their `out=` forms), so the same bits,
// without allocating and page-faulting ~4 x N x C floats a step. `one` is
// the scalar 1 that seeds loss.backward().
at::Tensor* ce_cross_entropy_step(const at::Tensor* x, const at::Tensor* y, int64_t layers,
                                  const at::Tensor* const* w, const at::Tensor* const* b,
                                  double dropout,
                                  const at::Tensor* class_weight,  // may be null
                                  double label_smoothing,
                                  at::Tensor* const* w_grad, at::Tensor* const* b_grad,
                                  at::Tensor* const* buf, const at::Tensor* one) {
  return ce::guarded<at::Tensor*>(nullptr, [&]() -> at::Tensor* {
    ce::BelowAutograd below;  // (below_autograd.h)
    const std::optional<at::Tensor> weight = optional_weight(class_weight);
    const int64_t last = layers - 1;
    at::Tensor& out = *buf[0];
    at::Tensor& log_p = *buf[1];
    at::Tensor& g_nll = *buf[2];
    at::Tensor& g_out = *buf[3];
    size_buffers({&out, &log_p, &g_nll, &g_out}, x->size(0), w[last]->size(0));

    // forward (train mode), the last layer into the logits buffer.
    const auto [inputs, relu_out, noise] = hidden_forward(*x, layers, w, b, dropout);
    at::addmm_out(out, *b[last], inputs.back(), w[last]->t());
    // F.cross_entropy is log_softmax over dim 1, then nll_loss.
    ce::log_softmax_out(log_p, out);  // (log_softmax.h: ATen's bits, faster)
    Smoothing smoothing;
    auto [loss, total_weight] = cross_entropy_forward(log_p, *y, weight, label_smoothing, smoothing);
    if (!smoothing.applied()) {
      // loss.backward(): the seed gradient of a scalar root is
      // ones_like(loss). NllLossBackward0, then LogSoftmaxBackward0:
      at::nll_loss_backward_out(g_nll, *one, log_p, *y, weight, at::Reduction::Mean, -100,
                                total_weight);
      ce::log_softmax_backward_out(g_out, g_nll, log_p);
    } else {
      // With label smoothing, autograd's nodes for the smoothing term too:
      // MulBackward1 into NllLossBackward0; MulBackward1, DivBackward0,
      // SumBackward0 (expand), MaskedFillBackward0, NegBackward0,
      // SumBackward1 (unsqueeze, expand) and, with weights, MulBackward0;
      // both reach LogSoftmaxBackward0, which adds them.
      const double eps = label_smoothing;
      const int64_t classes = log_p.size(1);
      at::Tensor g_nll_in = one->mul(1 - eps);
      at::Tensor g_smooth = one->mul(eps / static_cast<double>(classes)).div(smoothing.denom);
      g_smooth = g_smooth.expand({x->size(0)}).masked_fill(smoothing.ignore_mask, 0).neg();
      g_smooth = g_smooth.unsqueeze(1).expand({x->size(0), classes});
      if (weight) g_smooth = g_smooth.mul(smoothing.w_row);
      at::nll_loss_backward_out(g_nll, g_nll_in, log_p, *y, weight, at::Reduction::Mean, -100,
                                total_weight);
      ce::log_softmax_backward_out(g_out, at::add(g_smooth, g_nll), log_p);
    }
    at::Tensor g = g_out;
    for (int64_t i = last; i >= 0; i--) {
      // AddmmBackward0 + TBackward0 for W: mm_mat2_backward picks g.t().mm(h)
      // for W.t()'s strides. The broadcast bias: sum_to(g, [out]), that is
      // g.sum([0], keepdim=true) viewed as [out].
      at::mm_out(*w_grad[i], g.t(), inputs[i]);
      at::Tensor b_view = b_grad[i]->view({1, -1});
      at::sum_out(b_view, g, {0}, /*keepdim=*/true);
      if (i == 0) break;  // x needs no gradient
      // AddmmBackward0 for the layer's input, MulBackward0 for the dropout
      // (grad * noise), ReluBackward0 (threshold_backward on relu's result):
      at::Tensor g_in = mat1_backward(g, w[i]->t(), inputs[i]);
      if (dropout > 0) g_in = g_in.mul(noise[i - 1]);
      g = at::threshold_backward(g_in, relu_out[i - 1], 0);
    }
    for (int64_t i = 0; i < layers; i++) ce::bump_versions({w_grad[i], b_grad[i]});
    return new at::Tensor(std::move(loss));
  });
}

// The evaluation of the same model (model.eval(), torch.no_grad()): logits
// = the layers' addmm with relu between them (no dropout in eval mode),
// F.cross_entropy(logits, y, weight, label_smoothing) as in the step, and
// (logits.argmax(1) == y).sum() into *correct. buf[0..2] hold the logits
// and log_p (resized to the batch, kept between calls). Returns the loss
// (owned by the caller), or nullptr on an error.
at::Tensor* ce_cross_entropy_eval(const at::Tensor* x, const at::Tensor* y, int64_t layers,
                                  const at::Tensor* const* w, const at::Tensor* const* b,
                                  const at::Tensor* class_weight,  // may be null
                                  double label_smoothing, at::Tensor* const* buf,
                                  int64_t* correct) {
  return ce::guarded<at::Tensor*>(nullptr, [&]() -> at::Tensor* {
    ce::BelowAutograd below;
    const std::optional<at::Tensor> weight = optional_weight(class_weight);
    const int64_t last = layers - 1;
    at::Tensor& out = *buf[0];
    at::Tensor& log_p = *buf[1];
    size_buffers({&out, &log_p}, x->size(0), w[last]->size(0));
    const Hidden hidden = hidden_forward(*x, layers, w, b, /*dropout=*/0);  // eval mode
    at::addmm_out(out, *b[last], hidden.inputs.back(), w[last]->t());
    ce::log_softmax_out(log_p, out);
    Smoothing smoothing;
    auto [loss, total_weight] = cross_entropy_forward(log_p, *y, weight, label_smoothing, smoothing);
    *correct = count_correct(out, *y);
    return new at::Tensor(std::move(loss));
  });
}
}
