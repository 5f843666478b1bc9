// torch.optim.Adam's and AdamW's step for one parameter, as
// `_single_tensor_adam` (foreach=False, what PyTorch picks on the CPU;
// capturable=False, differentiable=False, maximize=False) writes it, call
// for call with the same Python-float scalars (C++ doubles here, as
// PyTorch's argument parser makes of them): the same kernels, the same
// bits, in one call from Rust (src/optim.rs). No C++ exception crosses
// into Rust.
#include "error.h"

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/maximum.h>
#include <cmath>
#include <exception>

extern "C" {

// `step` is the count after `step_t += 1`; max_exp_avg_sq is null without
// amsgrad. 0 on success, -1 on an error.
int ce_adam_step(at::Tensor* param, const at::Tensor* grad_in, at::Tensor* exp_avg,
                 at::Tensor* exp_avg_sq, at::Tensor* max_exp_avg_sq, double step, double lr,
                 double beta1, double beta2, double eps, double weight_decay,
                 bool decoupled_weight_decay) {
  try {
    at::NoGradGuard no_grad;
    at::Tensor grad = *grad_in;
    if (weight_decay != 0) {
      if (decoupled_weight_decay) {
        param->mul_(1 - lr * weight_decay);
      } else {
        grad = grad.add(*param, weight_decay);  // grad.add(param, alpha=weight_decay)
      }
    }
    exp_avg->lerp_(grad, 1 - beta1);
    exp_avg_sq->mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    double bias_correction1 = 1 - std::pow(beta1, step);
    double bias_correction2 = 1 - std::pow(beta2, step);
    double step_size = lr / bias_correction1;
    double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);  // Python's `** 0.5`
    // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps): Python's
    // `tensor / float` is div with the float as a wrapped scalar, as here.
    at::Tensor denom;
    if (max_exp_avg_sq != nullptr) {
      at::maximum_out(*max_exp_avg_sq, *max_exp_avg_sq, *exp_avg_sq);
      denom = max_exp_avg_sq->sqrt().div(bias_correction2_sqrt).add_(eps);
    } else {
      denom = exp_avg_sq->sqrt().div(bias_correction2_sqrt).add_(eps);
    }
    param->addcdiv_(*exp_avg, denom, -step_size);
    return 0;
  } catch (const std::exception& e) {
    ce::remember(e.what());
    return -1;
  }
}
}
