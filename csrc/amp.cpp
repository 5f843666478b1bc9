// Mixed precision, what tch does not bind (used by src/amp.rs):
// - torch.autocast(device_type, dtype) as a region: tch::autocast is a no-op
//   without CUDA and takes neither a device type nor a dtype.
//   ce_autocast_enter/exit are torch.autocast's __enter__/__exit__
//   (torch/amp/autocast_mode.py) for one device type, on this thread (the
//   autocast state is thread-local, as in PyTorch).
// - torch._amp_foreach_non_finite_check_and_unscale_ (a TensorList op tch's
//   generator skips): GradScaler.unscale_'s one kernel.
#include "error.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <vector>

extern "C" {

// The state __exit__ restores.
struct ce_autocast_prev {
  int enabled;
  int dtype;
  int cache_enabled;
};

// Enters autocast on device_type (c10::DeviceType: 0 CPU, 1 CUDA) with
// dtype (c10::ScalarType: 15 bfloat16, 5 float16), and writes the previous
// state to *prev. As torch.autocast(device_type, dtype) with its defaults:
// enabled, and the cache flag left as it is (cache_enabled=None).
// 0, or -1 on an error.
int ce_autocast_enter(int device_type, int dtype, ce_autocast_prev* prev) {
  return ce::guarded<int>(-1, [&]() -> int {
    auto dev = static_cast<c10::DeviceType>(device_type);
    auto fast = static_cast<c10::ScalarType>(dtype);
    TORCH_CHECK(dev == c10::DeviceType::CPU || dev == c10::DeviceType::CUDA,
                "only the cpu and cuda device types");
    TORCH_CHECK(fast == c10::ScalarType::BFloat16 || fast == c10::ScalarType::Half,
                "the dtype must be bfloat16 or float16, not ", fast);
    prev->cache_enabled = at::autocast::is_autocast_cache_enabled();
    prev->enabled = at::autocast::is_autocast_enabled(dev);
    prev->dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::set_autocast_dtype(dev, fast);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(prev->cache_enabled != 0);
    return 0;
  });
}

// Leaves the region entered with *prev: clears the cast cache when the
// outermost region ends, then restores the previous state.
void ce_autocast_exit(int device_type, const ce_autocast_prev* prev) {
  auto dev = static_cast<c10::DeviceType>(device_type);
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(dev, prev->enabled != 0);
  at::autocast::set_autocast_dtype(dev, static_cast<c10::ScalarType>(prev->dtype));
  at::autocast::set_autocast_cache_enabled(prev->cache_enabled != 0);
}

// torch.is_autocast_enabled(device_type) on this thread.
int ce_autocast_is_enabled(int device_type) {
  return at::autocast::is_autocast_enabled(static_cast<c10::DeviceType>(device_type));
}

// torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf,
// inv_scale): every grad *= inv_scale in place, found_inf = 1 where any
// element of any grad is inf or NaN. 0, or -1 on an error.
int ce_amp_non_finite_check_and_unscale(at::Tensor** grads, int64_t n, at::Tensor* found_inf,
                                        const at::Tensor* inv_scale) {
  return ce::guarded<int>(-1, [&]() -> int {
    std::vector<at::Tensor> list;
    list.reserve(n);
    for (int64_t i = 0; i < n; ++i) list.push_back(*grads[i]);
    at::_amp_foreach_non_finite_check_and_unscale_(list, *found_inf, *inv_scale);
    return 0;
  });
}
}
