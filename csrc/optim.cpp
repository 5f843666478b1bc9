// torch.optim's SGD, Adam/AdamW and RMSprop steps for one parameter, as
// their single-tensor functions (`_single_tensor_sgd`, `_single_tensor_adam`,
// `_single_tensor_rmsprop`: foreach=False, what PyTorch picks on the CPU;
// capturable=False, differentiable=False, maximize=False) write them, call
// for call with the same Python-float scalars (C++ doubles here, as
// PyTorch's argument parser makes of them): the same kernels, the same
// bits, in one call from Rust (src/optim.rs). No C++ exception crosses
// into Rust (error.h).
#include "below_autograd.h"
#include "error.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/scalar_tensor.h>
#include <cmath>

namespace {

// The Python float `v` beside the f32 tensor `like` in `t.mul_(v)`,
// `t.div(v)`, `t.add_(v)`: ATen wraps v in a 0-dim double tensor on the CPU
// and casts it to the tensor's f32 before the f32 kernel runs (on CUDA too,
// as a CPU scalar); a 0-dim f32 CPU tensor holding v is that same operand
// for the same kernel, at half the cost of the wrapping (about 1 us a call
// against 2 us).
at::Tensor operand(double v, const at::Tensor& like) {
  return at::scalar_tensor(v, like.options().device(at::kCPU));
}

// `grad.add(param, alpha=weight_decay)` where weight_decay != 0 (the L2
// term every one of these optimizers adds first), else grad itself.
at::Tensor with_l2(const at::Tensor& grad, const at::Tensor& param, double weight_decay) {
  return weight_decay != 0 ? grad.add(param, weight_decay) : grad;
}

}  // namespace

extern "C" {

// `step` is the count after `step_t += 1`; max_exp_avg_sq is null without
// amsgrad. 0 on success, -1 on an error.
int ce_adam_step(at::Tensor* param, const at::Tensor* grad_in, at::Tensor* exp_avg,
                 at::Tensor* exp_avg_sq, at::Tensor* max_exp_avg_sq, double step, double lr,
                 double beta1, double beta2, double eps, double weight_decay,
                 bool decoupled_weight_decay) {
  return ce::guarded<int>(-1, [&]() -> int {
    ce::BelowAutograd below;
    if (weight_decay != 0 && decoupled_weight_decay) {
      param->mul_(operand(1 - lr * weight_decay, *param));  // AdamW
    }
    at::Tensor grad = with_l2(*grad_in, *param, decoupled_weight_decay ? 0 : weight_decay);
    exp_avg->lerp_(grad, 1 - beta1);
    exp_avg_sq->mul_(operand(beta2, *exp_avg_sq)).addcmul_(grad, grad, 1 - beta2);
    double bias_correction1 = 1 - std::pow(beta1, step);
    double bias_correction2 = 1 - std::pow(beta2, step);
    double step_size = lr / bias_correction1;
    double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);  // Python's `** 0.5`
    // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps): Python's
    // `tensor / float` is div with the float as a wrapped scalar.
    at::Tensor denom;
    if (max_exp_avg_sq != nullptr) {
      at::maximum_out(*max_exp_avg_sq, *max_exp_avg_sq, *exp_avg_sq);
      denom = max_exp_avg_sq->sqrt();
    } else {
      denom = exp_avg_sq->sqrt();
    }
    denom = denom.div(operand(bias_correction2_sqrt, denom)).add_(operand(eps, denom));
    param->addcdiv_(*exp_avg, denom, -step_size);
    ce::bump_versions({param, exp_avg, exp_avg_sq, max_exp_avg_sq});
    return 0;
  });
}

// torch.optim.SGD's step for one parameter, as `_single_tensor_sgd`
// (foreach=False, maximize=False, a float lr) writes it. `*momentum_buffer`
// is the parameter's buffer, or null before its first step with momentum:
// then the new buffer (`grad.detach().clone()`) is returned there, owned by
// the caller. 0 on success, -1 on an error.
int ce_sgd_step(at::Tensor* param, const at::Tensor* grad_in, at::Tensor** momentum_buffer,
                double lr, double momentum, double dampening, double weight_decay,
                bool nesterov) {
  return ce::guarded<int>(-1, [&]() -> int {
    ce::BelowAutograd below;
    at::Tensor grad = with_l2(*grad_in, *param, weight_decay);
    if (momentum != 0) {
      at::Tensor buf;
      if (*momentum_buffer == nullptr) {
        buf = grad.detach().clone();
        *momentum_buffer = new at::Tensor(buf);
      } else {
        buf = **momentum_buffer;
        buf.mul_(operand(momentum, buf)).add_(grad, 1 - dampening);
      }
      if (nesterov) {
        grad = grad.add(buf, momentum);
      } else {
        grad = buf;
      }
    }
    param->add_(grad, -lr);
    ce::bump_versions({param, *momentum_buffer});
    return 0;
  });
}

// torch.optim.RMSprop's step for one parameter, as `_single_tensor_rmsprop`
// (foreach=False, maximize=False, differentiable=False, real tensors)
// writes it, after its `step += 1`. grad_avg is null unless centered;
// momentum_buffer is null unless momentum > 0 (PyTorch makes it, zeros, at
// the first step where momentum > 0). 0 on success, -1 on an error.
int ce_rmsprop_step(at::Tensor* param, const at::Tensor* grad_in, at::Tensor* square_avg,
                    at::Tensor* grad_avg, at::Tensor* momentum_buffer, double lr, double alpha,
                    double eps, double weight_decay, double momentum) {
  return ce::guarded<int>(-1, [&]() -> int {
    ce::BelowAutograd below;
    at::Tensor grad = with_l2(*grad_in, *param, weight_decay);
    square_avg->mul_(operand(alpha, *square_avg)).addcmul_(grad, grad, 1 - alpha);
    at::Tensor avg;
    if (grad_avg != nullptr) {  // centered
      grad_avg->lerp_(grad, 1 - alpha);
      avg = square_avg->addcmul(*grad_avg, *grad_avg, -1).sqrt_();
    } else {
      avg = square_avg->sqrt();
    }
    avg = avg.add_(operand(eps, avg));
    if (momentum > 0 && momentum_buffer != nullptr) {
      momentum_buffer->mul_(operand(momentum, *momentum_buffer)).addcdiv_(grad, avg);
      param->add_(*momentum_buffer, -lr);
    } else {
      param->addcdiv_(grad, avg, -lr);
    }
    ce::bump_versions({param, square_avg, grad_avg, momentum > 0 ? momentum_buffer : nullptr});
    return 0;
  });
}
}
