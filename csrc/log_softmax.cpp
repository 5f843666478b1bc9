// See log_softmax.h. Why: with a few classes, ATen's CPU log_softmax spends
// about 190 ns a row (its AVX512 kernel reduces each short row one lane at
// a time through memory), a third of a mini-batch epoch of `train` on
// digits; its backward is a further 50 ns a row.
//
// What: the same arithmetic, element for element, in the order ATen's AVX512
// kernels do it for rows shorter than one 16-lane vector (the only case
// here), with the same SLEEF functions those kernels call (looked up in
// libtorch at run time): for each row of x,
//   m = max_j x_j            (vec::maximum: a NaN makes m all-ones bits)
//   s = exp(x_0 - m) + exp(x_1 - m) + ...  (Sleef_expf16_u10, summed left
//                                             to right in f32)
//   out_j = (x_j - m) - log(s)             (Sleef_logf16_u10)
// and backward, with grad g and output o:
//   grad_in_j = g_j - exp(o_j) * (g_0 + g_1 + ...)  (one fused multiply-add,
//                                                     as libtorch's build
//                                                     compiles it)
// Rows are done 16 lanes at a time across rows instead of one padded vector
// a row: SLEEF's functions work lane by lane, so each element gets the same
// bits. (Except a NaN's payload and sign: where two NaNs meet, x86 passes
// on the one in a given operand position, and the compiler picks the
// positions; a NaN stays a NaN.) Anything else (another CPU capability, 16
// or more classes, another dtype or layout, CUDA) goes to ATen's own
// kernels.
// tests/kernels.rs compares both functions with ATen bit for bit.
#include "log_softmax.h"

#include <ATen/Version.h>
#include <ATen/ops/_log_softmax_backward_data.h>
#include <ATen/ops/log_softmax.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__linux__)
#include <dlfcn.h>
#include <immintrin.h>
#define CE_ROWS_KERNEL 1
#endif

namespace {

constexpr int64_t kLanes = 16;  // an AVX512 vector of f32

#ifdef CE_ROWS_KERNEL
using Sleef16 = __m512 (*)(__m512);

struct Sleef {
  Sleef16 exp;
  Sleef16 log;
};

// SLEEF's exp and log as ATen's AVX512 kernels call them, or null where
// ATen does not run those kernels (ATEN_CPU_CAPABILITY, an older CPU).
const Sleef* sleef() {
  static const Sleef* found = []() -> const Sleef* {
    if (at::get_cpu_capability() != "AVX512") return nullptr;
    static Sleef s{reinterpret_cast<Sleef16>(dlsym(RTLD_DEFAULT, "Sleef_expf16_u10")),
                   reinterpret_cast<Sleef16>(dlsym(RTLD_DEFAULT, "Sleef_logf16_u10"))};
    return s.exp != nullptr && s.log != nullptr ? &s : nullptr;
  }();
  return found;
}

// f(data[i]) for i < n, in place, 16 lanes at a time.
__attribute__((target("avx512f"))) void map16(Sleef16 f, float* data, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm512_storeu_ps(data + i, f(_mm512_loadu_ps(data + i)));
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(data + i, tail, f(_mm512_maskz_loadu_ps(tail, data + i)));
  }
}

// vec::maximum(a, b) of one lane: vmaxps (b unless a > b), or all-ones bits
// where either is NaN.
inline float aten_max(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) {
    const uint32_t all_ones = 0xFFFFFFFFu;
    float nan;
    std::memcpy(&nan, &all_ones, sizeof nan);
    return nan;
  }
  return a > b ? a : b;
}

constexpr int64_t kBlock = 256;  // rows a block: its scratch fits in L1

__attribute__((target("avx512f"))) void forward_rows(const Sleef& s, const float* x, float* out,
                                                     int64_t n, int64_t c) {
  float shifted[kBlock * kLanes], e[kBlock * kLanes], log_sum[kBlock];
  for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
    const int64_t rows = std::min(kBlock, n - r0);
    const float* xb = x + r0 * c;
    for (int64_t i = 0; i < rows; i++) {
      const float* row = xb + i * c;
      float m = row[0];
      for (int64_t j = 1; j < c; j++) m = aten_max(m, row[j]);
      for (int64_t j = 0; j < c; j++) shifted[i * c + j] = row[j] - m;
    }
    std::memcpy(e, shifted, sizeof(float) * rows * c);
    map16(s.exp, e, rows * c);
    for (int64_t i = 0; i < rows; i++) {
      float sum = e[i * c];
      for (int64_t j = 1; j < c; j++) sum += e[i * c + j];
      log_sum[i] = sum;
    }
    map16(s.log, log_sum, rows);
    float* ob = out + r0 * c;
    for (int64_t i = 0; i < rows; i++) {
      for (int64_t j = 0; j < c; j++) ob[i * c + j] = shifted[i * c + j] - log_sum[i];
    }
  }
}

__attribute__((target("avx512f,fma"))) void backward_rows(const Sleef& s, const float* g,
                                                          const float* o, float* grad_in,
                                                          int64_t n, int64_t c) {
  float e[kBlock * kLanes];
  for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
    const int64_t rows = std::min(kBlock, n - r0);
    const float* gb = g + r0 * c;
    std::memcpy(e, o + r0 * c, sizeof(float) * rows * c);
    map16(s.exp, e, rows * c);
    float* out = grad_in + r0 * c;
    for (int64_t i = 0; i < rows; i++) {
      float sum = gb[i * c];
      for (int64_t j = 1; j < c; j++) sum += gb[i * c + j];
      for (int64_t j = 0; j < c; j++) out[i * c + j] = std::fma(-e[i * c + j], sum, gb[i * c + j]);
    }
  }
}
#endif

// A plain dense f32 CPU tensor of like's shape, its elements in row-major
// order in memory (the layout checked first: other layouts throw on
// is_contiguous()).
bool fits(const at::Tensor& t, const at::Tensor& like) {
  return t.defined() && t.layout() == at::kStrided && t.is_cpu() &&
         t.scalar_type() == at::kFloat && !t.is_neg() && !t._is_zerotensor() &&
         t.is_contiguous() && t.sizes() == like.sizes();
}

}  // namespace

bool ce::rows_kernel_applies(const at::Tensor& x) {
#ifdef CE_ROWS_KERNEL
  return fits(x, x) && x.dim() == 2 && x.size(1) >= 1 && x.size(1) < kLanes && sleef() != nullptr;
#else
  (void)x;
  return false;
#endif
}

void ce::log_softmax_out(at::Tensor& out, const at::Tensor& x) {
#ifdef CE_ROWS_KERNEL
  if (rows_kernel_applies(x) && fits(out, x)) {
    forward_rows(*sleef(), x.const_data_ptr<float>(), out.mutable_data_ptr<float>(), x.size(0),
                 x.size(1));
    return;
  }
#endif
  at::log_softmax_out(out, x, 1, x.scalar_type());
}

void ce::log_softmax_backward_out(at::Tensor& grad_in, const at::Tensor& grad,
                                  const at::Tensor& out) {
#ifdef CE_ROWS_KERNEL
  if (rows_kernel_applies(out) && fits(grad, out) && fits(grad_in, out)) {
    backward_rows(*sleef(), grad.const_data_ptr<float>(), out.const_data_ptr<float>(),
                  grad_in.mutable_data_ptr<float>(), out.size(0), out.size(1));
    return;
  }
#endif
  at::_log_softmax_backward_data_out(grad_in, grad, out, 1, out.scalar_type());
}

// For src/log_softmax.rs (and so tests/kernels.rs): each function above on
// a new tensor. nullptr on an error (error.h).
#include "below_autograd.h"
#include "error.h"

#include <ATen/ops/empty_like.h>

extern "C" {
int ce_rows_kernel_applies(const at::Tensor* x) {
  return ce::guarded<int>(0, [&]() { return ce::rows_kernel_applies(*x) ? 1 : 0; });
}

at::Tensor* ce_log_softmax(const at::Tensor* x) {
  return ce::guarded<at::Tensor*>(nullptr, [&]() -> at::Tensor* {
    ce::BelowAutograd below;
    at::Tensor out = at::empty_like(*x, at::MemoryFormat::Contiguous);
    ce::log_softmax_out(out, *x);
    return new at::Tensor(std::move(out));
  });
}

at::Tensor* ce_log_softmax_backward(const at::Tensor* grad, const at::Tensor* out) {
  return ce::guarded<at::Tensor*>(nullptr, [&]() -> at::Tensor* {
    ce::BelowAutograd below;
    TORCH_CHECK(grad->sizes() == out->sizes(), "log_softmax_backward: a gradient of shape ",
                grad->sizes(), " for an output of shape ", out->sizes());
    at::Tensor grad_in = at::empty_like(*out, at::MemoryFormat::Contiguous);
    ce::log_softmax_backward_out(grad_in, *grad, *out);
    return new at::Tensor(std::move(grad_in));
  });
}
}
