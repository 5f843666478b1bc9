// The one translation unit that includes gloo's headers (Debian's
// libgloo-dev: the torch wheel ships ProcessGroupGloo.hpp but no gloo/).
// Those headers are a 2022 snapshot whose class layouts have drifted from
// the gloo libtorch was built with (gloo::Context is 72 bytes there, 64 in
// libtorch's), so this file only constructs the backend through libtorch's
// own out-of-line functions and hands back a c10d::Backend: nothing here
// reads a gloo object, calls a gloo virtual function or runs gloo's inline
// code (build-notes.md, "The gloo headers").
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <string>
#include <vector>

namespace ce {

// ProcessGroupGloo as `torch.distributed`'s init makes it
// (ProcessGroupGloo(store, rank, size, timeout) in torch/csrc/distributed/
// c10d/init.cpp): a device per interface of GLOO_SOCKET_IFNAME, else the
// default device (this host's name, else the loopback), two threads per
// device.
c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                            int rank, int size,
                                            std::chrono::milliseconds timeout,
                                            const std::vector<std::string>& interfaces) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (interfaces.empty()) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  } else {
    for (const auto& name : interfaces) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
    }
  }
  options->threads = static_cast<int>(options->devices.size()) * 2;
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  // The layout check: getOptions() is inline, a read of the member
  // options_ at the offset these headers give it, after the members
  // libtorch's constructor wrote (its contexts, threads, queues). Headers
  // whose ProcessGroupGloo differs in layout from libtorch's read another
  // word here.
  TORCH_CHECK(backend->getOptions().get() == options.get(),
              "the gloo headers do not match this libtorch's ProcessGroupGloo layout "
              "(build-notes.md, \"The gloo headers\")");
  TORCH_CHECK(backend->getRank() == rank && backend->getSize() == size,
              "the gloo backend reports another rank or size than it was made with");
  return backend;
}

// sizeof as these headers see them, for the layout test (and build-notes).
size_t gloo_backend_size() { return sizeof(c10d::ProcessGroupGloo); }
size_t gloo_options_size() { return sizeof(c10d::ProcessGroupGloo::Options); }

}  // namespace ce
