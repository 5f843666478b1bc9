// The state of libtorch's default CPU generator, as `torch.get_rng_state()`
// and `torch.set_rng_state()` read and write it (tch has neither). Used by
// src/rng.rs; no C++ exception crosses into Rust.
#include "error.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randperm.h>
#include <cstdint>
#include <cstring>
#include <mutex>

extern "C" {

// Copies the state into out (cap bytes) and returns its length; -1 on an
// error, or the length needed when cap is too small (nothing copied then).
int64_t ce_cpu_rng_get_state(uint8_t* out, int64_t cap) {
  return ce::guarded<int64_t>(-1, [&]() -> int64_t {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    at::Tensor state = gen.get_state();
    int64_t n = state.numel();
    if (n <= cap) std::memcpy(out, state.data_ptr(), n);
    return n;
  });
}

// Sets the state from len bytes; 0 on success, -1 on an error (a state of
// the wrong size or version is refused by libtorch).
int ce_cpu_rng_set_state(const uint8_t* bytes, int64_t len) {
  return ce::guarded<int>(-1, [&]() -> int {
    at::Tensor state = at::empty({len}, at::kByte);
    std::memcpy(state.data_ptr(), bytes, len);
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
    return 0;
  });
}

// torch.randperm(n, generator=g) with g = torch.Generator() and
// g.manual_seed(seed): a generator of its own, the default one untouched
// (DistributedSampler's shuffle). A new tensor, or null on an error.
at::Tensor* ce_randperm_with_seed(int64_t n, uint64_t seed) {
  return ce::guarded<at::Tensor*>(nullptr, [&] {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    return new at::Tensor(at::randperm(n, gen, at::kLong));
  });
}
}
