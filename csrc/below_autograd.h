// How our C++ calls libtorch's kernels (csrc/step.cpp, csrc/optim.cpp):
// straight in the CPU/CUDA kernels, below the autograd and in-place/view
// bookkeeping layers of the dispatcher. Nothing these calls do is recorded
// for autograd (as under torch.no_grad()), and skipping the layers saves
// about a third of each small call's overhead: the same kernels, the same
// bits. The one piece of that bookkeeping with an effect is the version
// counter of each tensor updated in place, which autograd checks against
// the versions it saved for a backward: bump_versions() bumps it as those
// layers would.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <initializer_list>

namespace ce {

struct BelowAutograd {
  at::NoGradGuard no_grad;
  at::AutoDispatchBelowADInplaceOrView below_autograd;
};

// For each tensor a call updated in place (null ones are skipped).
inline void bump_versions(std::initializer_list<at::Tensor*> updated) {
  for (at::Tensor* t : updated) {
    if (t != nullptr) t->unsafeGetTensorImpl()->bump_version();
  }
}

}  // namespace ce
