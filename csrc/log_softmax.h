// log_softmax over the classes of a batch of logits, and its backward, with
// ATen's bits and without ATen's per-row cost (csrc/log_softmax.cpp).
#pragma once

#include <ATen/core/Tensor.h>

namespace ce {

// Whether the row kernels below run for `x` (else ATen's own kernels do):
// a 2-D contiguous f32 CPU tensor with fewer than 16 classes, where ATen
// runs its AVX512 kernels (at::get_cpu_capability()) and libtorch exports
// the SLEEF functions they call.
bool rows_kernel_applies(const at::Tensor& x);

// at::log_softmax_out(out, x, 1, Float), the same bits: out must be an f32
// tensor of x's shape (resized by the caller).
void log_softmax_out(at::Tensor& out, const at::Tensor& x);

// at::_log_softmax_backward_data_out(grad_in, grad, out, 1, Float), the
// same bits; grad_in is sized like out.
void log_softmax_backward_out(at::Tensor& grad_in, const at::Tensor& grad, const at::Tensor& out);

}  // namespace ce
