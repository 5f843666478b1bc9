//! `log_softmax` over the classes of a batch of logits, and its backward:
//! ATen's bits, at about a tenth of ATen's cost when there are few classes
//! (`csrc/log_softmax.cpp` says how). [`crate::ManualStep`] uses them for
//! the exact fast step and its evaluation; these functions are the same
//! kernels on their own, for checking them against ATen.

use crate::ffi::owned_tensor;
use tch::{TchError, Tensor};

extern "C" {
    fn ce_rows_kernel_applies(x: *const torch_sys::C_tensor) -> i32;
    fn ce_log_softmax(x: *const torch_sys::C_tensor) -> *mut torch_sys::C_tensor;
    fn ce_log_softmax_backward(
        grad: *const torch_sys::C_tensor,
        out: *const torch_sys::C_tensor,
    ) -> *mut torch_sys::C_tensor;
}

/// Whether our row kernels run for `x`, rather than ATen's: a 2-D
/// contiguous f32 CPU tensor with 1 to 15 classes, where ATen runs its
/// AVX512 kernels (`torch.backends.cpu.get_cpu_capability() == "AVX512"`)
/// and libtorch exports the SLEEF functions they call.
pub fn rows_kernel_applies(x: &Tensor) -> bool {
    // SAFETY: a live tensor, only read.
    unsafe { ce_rows_kernel_applies(x.as_ptr()) != 0 }
}

/// `x.log_softmax(1, x.kind())`, bit for bit (a NaN where ATen has a NaN,
/// its payload aside: see `csrc/log_softmax.cpp`).
pub fn log_softmax(x: &Tensor) -> Result<Tensor, TchError> {
    // SAFETY: a live tensor, only read; the result is a new tensor we own.
    owned_tensor(unsafe { ce_log_softmax(x.as_ptr()) })
}

/// `Tensor::internal_log_softmax_backward_data(grad, out, 1, out.kind())`
/// (`torch._log_softmax_backward_data`), bit for bit as `log_softmax`: the
/// gradient of the logits, given the gradient of `out = log_softmax(logits,
/// 1)` (of the same shape, else an error).
pub fn log_softmax_backward(grad: &Tensor, out: &Tensor) -> Result<Tensor, TchError> {
    // SAFETY: live tensors, only read; the result is a new tensor we own.
    owned_tensor(unsafe { ce_log_softmax_backward(grad.as_ptr(), out.as_ptr()) })
}
