// The c10d side of src/distributed.rs: the rendezvous store, the process
// group and its collectives, all libtorch's own (torch.distributed's C++).
// No gloo header here: the gloo backend comes from csrc/gloo.cpp as a
// c10d::Backend.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <climits>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "error.h"

namespace ce {
c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                            int rank, int size,
                                            std::chrono::milliseconds timeout,
                                            const std::vector<std::string>& interfaces);
size_t gloo_backend_size();
size_t gloo_options_size();
#ifdef CE_WITH_NCCL
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                            int rank, int size,
                                            std::chrono::milliseconds timeout, int device);
#endif
}  // namespace ce

struct CeGroup {
  c10::intrusive_ptr<c10d::Store> store;  // the TCPStore, unprefixed
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::chrono::milliseconds timeout;
  bool nccl;
};

namespace {
std::vector<std::string> split_commas(const char* text) {
  std::vector<std::string> parts;
  std::stringstream in(text ? text : "");
  for (std::string part; std::getline(in, part, ',');) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

void wait(CeGroup* g, const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait(g->timeout);
}
}  // namespace

extern "C" {

// init_process_group("gloo", init_method="env://", timeout=...) as
// distributed_c10d.py does it: a TCPStore on MASTER_ADDR:MASTER_PORT
// (rank 0 hosts it, multi-tenant, unless client_only: under torchrun the
// agent hosts it, TORCHELASTIC_USE_AGENT_STORE), the key prefixes of the
// default group ("default_pg", then the group name "0/", then the device
// "cpu/"), the gloo backend on the CPU and its sequence number. A group
// made here and one made by Python join each other. With a cuda_device
// (not -1), as init_process_group("cpu:gloo,cuda:nccl") after
// torch.cuda.set_device(cuda_device): gloo for CPU tensors on the "cpu/"
// prefix, ProcessGroupNCCL for CUDA tensors on "cuda/" (csrc/nccl.cpp, where
// build.rs found NCCL's and CUDA's headers), NCCL the default. Null on an
// error (ce_last_error).
CeGroup* ce_dist_init(int rank, int world, const char* host, int port, int client_only,
                      int64_t timeout_ms, const char* interfaces, int cuda_device) {
  return ce::guarded<CeGroup*>(nullptr, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = !client_only && rank == 0;
    opts.numWorkers = world;
    opts.waitWorkers = true;
    opts.timeout = timeout;
    opts.multiTenant = !client_only;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(host, opts);
    c10::intrusive_ptr<c10d::Store> store = tcp;
    auto default_pg = c10::make_intrusive<c10d::PrefixStore>("default_pg", store);
    auto group = c10::make_intrusive<c10d::PrefixStore>("0/", default_pg);
    auto cpu = c10::make_intrusive<c10d::PrefixStore>("cpu/", group);
    auto backend = ce::make_gloo(cpu, rank, world, timeout, split_commas(interfaces));
    backend->setSequenceNumberForGroup();
    auto pg = c10::make_intrusive<c10d::ProcessGroup>(group, rank, world);
    pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, backend);
    const bool nccl = cuda_device >= 0;
    if (nccl) {
#ifdef CE_WITH_NCCL
      auto cuda = c10::make_intrusive<c10d::PrefixStore>("cuda/", group);
      auto nccl_backend = ce::make_nccl(cuda, rank, world, timeout, cuda_device);
      nccl_backend->setSequenceNumberForGroup();
      pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
      pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl_backend);
#else
      TORCH_CHECK(false,
                  "this build has no NCCL backend (built without NCCL's and CUDA's headers, "
                  "or against a libtorch without CUDA; build-notes.md, \"NCCL\")");
#endif
    }
    return new CeGroup{store, pg, timeout, nccl};
  });
}

// destroy_process_group(): NCCL's backend shut down first (its watchdog,
// its communicators), as Python does, else its destructor warns of a group
// not destroyed.
void ce_dist_free(CeGroup* g) {
  if (g->nccl) {
    try {
      g->pg->shutdown();
    } catch (...) {
      // Going away regardless: a failed shutdown (a peer gone) changes nothing.
    }
  }
  delete g;
}

// c10's log threshold (0 info, 1 warning, 2 error, 3 fatal), what
// TORCH_CPP_LOG_LEVEL sets at start: c10d logs each connect retry and
// timeout as a warning on stderr.
void ce_c10_set_log_level(int level) { FLAGS_caffe2_log_level = level; }

// dist.all_reduce(t) (SUM), in place.
int ce_dist_all_reduce_sum(CeGroup* g, at::Tensor* t) {
  return ce::guarded(-1, [&] {
    std::vector<at::Tensor> ts{*t};
    wait(g, g->pg->allreduce(ts));
    return 0;
  });
}

// dist.broadcast(t, src=root), in place.
int ce_dist_broadcast(CeGroup* g, at::Tensor* t, int root) {
  return ce::guarded(-1, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(g, g->pg->broadcast(ts, opts));
    return 0;
  });
}

// dist.barrier().
int ce_dist_barrier(CeGroup* g) {
  return ce::guarded(-1, [&] {
    wait(g, g->pg->barrier());
    return 0;
  });
}

// store.set(key, value) / store.get(key) on the unprefixed store (the
// config hash at rendezvous). get waits up to the group's timeout; it
// copies at most cap bytes and returns the value's length (-1 on error).
int ce_dist_store_set(CeGroup* g, const char* key, const uint8_t* value, int64_t len) {
  return ce::guarded(-1, [&] {
    g->store->set(key, std::vector<uint8_t>(value, value + len));
    return 0;
  });
}

int64_t ce_dist_store_get(CeGroup* g, const char* key, uint8_t* out, int64_t cap) {
  return ce::guarded<int64_t>(-1, [&] {
    auto value = g->store->get(key);
    auto n = static_cast<int64_t>(value.size());
    std::copy_n(value.begin(), std::min(n, cap), out);
    return n;
  });
}

// DistributedDataParallel(module) with its defaults, as
// torch/nn/parallel/distributed.py builds it: the parameters' shapes
// checked across ranks (_verify_param_shape_across_processes), rank 0's
// values broadcast to all (_sync_module_states: _broadcast_coalesced with
// 250 MiB buckets), the buckets assigned (_compute_bucket_assignment_by_size
// with [sys.maxsize]: one bucket at first, since find_unused_parameters is
// off) and c10d's own Reducer over them (25 MiB buckets, a 1 MiB first
// bucket when it rebuilds them after the first iteration, gradients copied,
// not bucket views). The Reducer registers its hooks on the parameters'
// gradient accumulators: backward() then averages the gradients as DDP's
// does, whatever calls it. Null on an error.
struct CeDdp {
  std::shared_ptr<c10d::Reducer> reducer;
};

CeDdp* ce_ddp_new(CeGroup* g, const at::Tensor* const* params, int64_t n) {
  return ce::guarded<CeDdp*>(nullptr, [&] {
    std::vector<at::Tensor> ps;
    for (int64_t i = 0; i < n; ++i) ps.push_back(*params[i]);
    {
      // In place into leaf parameters, as Python's _sync_module_states
      // runs it (under no_grad).
      at::NoGradGuard no_grad;
      c10d::verify_params_across_processes(g->pg, ps, std::nullopt);
      c10d::broadcast_coalesced(g->pg, ps, 250 * 1024 * 1024, 0);
    }
    std::vector<bool> sparse(ps.size(), false);
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
        ps, {static_cast<size_t>(LLONG_MAX)}, sparse);
    (void)limits;
    std::reverse(buckets.begin(), buckets.end());
    const int64_t bucket_bytes_cap = 25 * 1024 * 1024, first_bucket_bytes_cap = 1024 * 1024;
    auto reducer = std::make_shared<c10d::Reducer>(
        ps, buckets, g->pg, sparse, bucket_bytes_cap, /*find_unused_parameters=*/false,
        /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{},
        first_bucket_bytes_cap, /*skip_all_reduce_unused_params=*/false,
        /*use_python_reducer=*/false, /*bucket_bytes_cap_list=*/std::vector<int64_t>{});
    return new CeDdp{reducer};
  });
}

// DDP's forward, before the module runs (_pre_forward): prepare_for_forward,
// then _rebuild_buckets (which rebuilds once, after the first iteration, in
// the order the gradients became ready, and broadcasts rank 0's order).
int ce_ddp_pre_forward(CeDdp* d) {
  return ce::guarded(-1, [&] {
    d->reducer->prepare_for_forward();
    d->reducer->rebuild_buckets();
    return 0;
  });
}

// DDP's forward, after the module ran (_post_forward): prepare_for_backward
// with no outputs (find_unused_parameters off).
int ce_ddp_post_forward(CeDdp* d) {
  return ce::guarded(-1, [&] {
    d->reducer->prepare_for_backward({});
    return 0;
  });
}

void ce_ddp_free(CeDdp* d) { delete d; }

// Whether csrc/nccl.cpp is in this build.
int ce_dist_nccl_built() {
#ifdef CE_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

size_t ce_dist_gloo_backend_size() { return ce::gloo_backend_size(); }
size_t ce_dist_gloo_options_size() { return ce::gloo_options_size(); }
}
