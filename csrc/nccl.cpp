// The one translation unit with ProcessGroupNCCL.hpp (CUDA's and NCCL's
// headers: the wheel's nvidia/nccl/include and nvidia/cu13/include, with
// the nvidia-cuda-crt and nvidia-cuda-cccl packages of the wheel's CUDA
// release; build.rs compiles it only where all are found, and where
// libtorch has libtorch_cuda.so, which holds ProcessGroupNCCL's code).
// Like csrc/gloo.cpp, it only constructs the backend through libtorch's
// out-of-line constructor and hands back a c10d::Backend.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <chrono>

namespace ce {

// ProcessGroupNCCL as distributed_c10d.py's _new_process_group_helper makes
// it for the default group: Options() with is_high_priority_stream False,
// its _timeout the group's, group_name "0". No communicator is made here:
// NCCL makes one on the first collective on a device. First, as a torchrun
// script's torch.cuda.set_device(local_rank): `device` becomes the current
// CUDA device (through c10's device guard registry, which libc10_cuda
// fills), so that what c10d allocates on "the" CUDA device (the barrier's
// tensor) is this rank's GPU, not every rank's GPU 0.
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                            int rank, int size,
                                            std::chrono::milliseconds timeout, int device) {
  // Without any GPU (deviceCount() is then 0, not an error) the
  // constructor below refuses, with its own message.
  const auto* cuda = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  if (const auto gpus = static_cast<int>(cuda->deviceCount()); gpus > 0) {
    TORCH_CHECK(device < gpus, "LOCAL_RANK ", device, " has no GPU of its own: this machine has ",
                gpus, " CUDA device(s)");
    cuda->setDevice(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device)));
  }
  auto options = c10d::ProcessGroupNCCL::Options::create(/*is_high_priority_stream=*/false);
  options->timeout = timeout;
  options->group_name = "0";
  auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
  // As csrc/gloo.cpp's check: getOptions() is an inline read of options_
  // at the offset these headers give it (ProcessGroupNCCL's members hold
  // CUDA and NCCL types: headers of another CUDA or NCCL release could move
  // it). Reached only where a GPU is: without one the constructor refuses.
  TORCH_CHECK(backend->getOptions().get() == options.get(),
              "the CUDA/NCCL headers do not match this libtorch's ProcessGroupNCCL layout "
              "(build-notes.md, \"NCCL\")");
  TORCH_CHECK(backend->getRank() == rank && backend->getSize() == size,
              "the NCCL backend reports another rank or size than it was made with");
  return backend;
}

}  // namespace ce
