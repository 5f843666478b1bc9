//! Data-parallel training on libtorch's own distributed engine (c10d):
//! the rendezvous store, the gloo process group and its collectives are
//! `torch.distributed`'s C++ (csrc/distributed.cpp, csrc/gloo.cpp), not a
//! collective of ours. A group made here joins one made by Python's
//! `dist.init_process_group("gloo")` (the same store keys), so a Rust rank
//! and a Python rank can reduce together.
//!
//! | PyTorch | here |
//! |---|---|
//! | `dist.init_process_group("gloo")` (`env://`, as `torchrun` starts it) | [`init_from_env`] |
//! | `dist.init_process_group("cpu:gloo,cuda:nccl")` | [`ProcessGroup::with_nccl`] |
//! | `dist.is_nccl_available()` | [`nccl_built`] |
//! | `dist.all_reduce(t)` | [`ProcessGroup::all_reduce_sum`] |
//! | `dist.broadcast(t, src)` | [`ProcessGroup::broadcast`] |
//! | `dist.barrier()` | [`ProcessGroup::barrier`] |
//! | DDP's start (`_sync_module_states`: rank 0's parameters to all) | [`ProcessGroup::broadcast_parameters`] |
//! | `model = DDP(model)`; `model(x)`; `loss.backward()` | [`DistributedDataParallel`] (c10d's Reducer) |
//! | DDP's gradient averaging, as a call after `loss.backward()` | [`ProcessGroup::all_reduce_gradients`] |
//!
//! [`DistributedDataParallel`] is DDP itself: c10d's Reducer, bit for bit
//! PyTorch DDP at any world size. [`ProcessGroup::all_reduce_gradients`],
//! for a loop that cannot wrap its forward, does what DDP's reducer does with
//! one bucket (`mark_variable_ready_dense` in c10d's reducer.cpp): each
//! gradient multiplied by `1 / world_size` into one flat bucket, parameters
//! in reverse order, then one allreduce-sum of the bucket. That is DDP's
//! first iteration exactly; from the second on DDP orders its bucket by
//! when gradients became ready in the backward pass. With two ranks the
//! order does not matter (`a + b == b + a`), so every step is bit-equal to
//! DDP; with three or more, gloo's ring adds each element in an order set
//! by its place in the bucket, and steps after the first may differ from
//! DDP's in the last bits.

use std::ffi::{CString, NulError};
use std::fmt;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;
use std::time::Duration;
use tch::{nn::VarStore, Tensor};

#[repr(C)]
struct CeGroup {
    _private: [u8; 0],
}

#[repr(C)]
struct CeDdp {
    _private: [u8; 0],
}

extern "C" {
    fn ce_dist_init(
        rank: c_int,
        world: c_int,
        host: *const c_char,
        port: c_int,
        client_only: c_int,
        timeout_ms: i64,
        interfaces: *const c_char,
        cuda_device: c_int,
    ) -> *mut CeGroup;
    fn ce_dist_nccl_built() -> c_int;
    fn ce_dist_free(g: *mut CeGroup);
    fn ce_c10_set_log_level(level: c_int);
    fn ce_dist_all_reduce_sum(g: *mut CeGroup, t: *mut torch_sys::C_tensor) -> c_int;
    fn ce_dist_broadcast(g: *mut CeGroup, t: *mut torch_sys::C_tensor, root: c_int) -> c_int;
    fn ce_dist_barrier(g: *mut CeGroup) -> c_int;
    fn ce_dist_store_set(g: *mut CeGroup, key: *const c_char, value: *const u8, len: i64) -> c_int;
    fn ce_dist_store_get(g: *mut CeGroup, key: *const c_char, out: *mut u8, cap: i64) -> i64;
    fn ce_ddp_new(g: *mut CeGroup, params: *const *const torch_sys::C_tensor, n: i64)
        -> *mut CeDdp;
    fn ce_ddp_pre_forward(d: *mut CeDdp) -> c_int;
    fn ce_ddp_post_forward(d: *mut CeDdp) -> c_int;
    fn ce_ddp_free(d: *mut CeDdp);
    fn ce_dist_gloo_backend_size() -> usize;
    fn ce_dist_gloo_options_size() -> usize;
}

/// What can go wrong joining or using a process group.
#[derive(Debug)]
pub enum DistributedError {
    /// A `torchrun` variable that is missing or not what it must be.
    Env { var: &'static str, reason: String },
    /// The rendezvous or the backend failed (c10d's message: a port in use,
    /// no rank 0 within the timeout, ...).
    Init(String),
    /// A collective failed (c10d's message: a rank that went away, a
    /// timeout).
    Collective { op: &'static str, message: String },
    /// A rank whose fingerprint (of its settings) differs from rank 0's.
    Mismatch { what: String, rank: usize },
    /// A string with a NUL byte in it.
    Nul(NulError),
}

impl fmt::Display for DistributedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env { var, reason } => write!(f, "{var}: {reason}"),
            Self::Init(message) => write!(f, "joining the process group: {}", first_line(message)),
            Self::Collective { op, message } => write!(f, "{op}: {}", first_line(message)),
            Self::Mismatch { what, rank } => write!(
                f,
                "rank {rank} was started with other {what} than rank 0; start every rank with the same ones"
            ),
            Self::Nul(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DistributedError {}

/// c10d's messages carry a C++ backtrace after their first line.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("").trim_end()
}

/// c10's log threshold, as `TORCH_CPP_LOG_LEVEL` sets it when the process
/// starts: 0 `INFO`, 1 `WARNING` (libtorch's default), 2 `ERROR`, 3
/// `FATAL`. c10d writes a warning on stderr for each retry of a connection
/// and each timeout, before the error that reports it.
pub fn set_c10_log_level(level: i32) {
    // SAFETY: an int store (libtorch reads it at each log call).
    unsafe { ce_c10_set_log_level(level) }
}

/// Where and who this process is in the job: `torchrun`'s environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub rank: usize,
    pub world_size: usize,
    /// `LOCAL_RANK` (the device index on a node); `rank` where unset.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// Every rank is a store client (torchrun's agent hosts the store:
    /// `TORCHELASTIC_USE_AGENT_STORE=True`); otherwise rank 0 hosts it.
    pub agent_store: bool,
}

impl Rendezvous {
    /// `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` and
    /// `TORCHELASTIC_USE_AGENT_STORE`, read the way `env://` reads them.
    pub fn from_env() -> Result<Self, DistributedError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Rendezvous::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, DistributedError> {
        let need = |name: &'static str| {
            var(name).filter(|v| !v.is_empty()).ok_or(DistributedError::Env {
                var: name,
                reason: "not set (torchrun sets it; or use `train --nproc N`)".to_string(),
            })
        };
        let number = |name: &'static str, text: String| {
            text.trim().parse::<usize>().map_err(|_| DistributedError::Env {
                var: name,
                reason: format!("{text:?} is not a non-negative integer"),
            })
        };
        let world_size = number("WORLD_SIZE", need("WORLD_SIZE")?)?;
        if world_size == 0 {
            return Err(DistributedError::Env { var: "WORLD_SIZE", reason: "is 0".to_string() });
        }
        let rank = number("RANK", need("RANK")?)?;
        if rank >= world_size {
            return Err(DistributedError::Env {
                var: "RANK",
                reason: format!("{rank} is not below WORLD_SIZE {world_size}"),
            });
        }
        let local_rank = match var("LOCAL_RANK").filter(|v| !v.is_empty()) {
            Some(text) => number("LOCAL_RANK", text)?,
            None => rank,
        };
        let master_addr = need("MASTER_ADDR")?;
        let port_text = need("MASTER_PORT")?;
        let master_port = port_text.trim().parse::<u16>().map_err(|_| DistributedError::Env {
            var: "MASTER_PORT",
            reason: format!("{port_text:?} is not a port (0 to 65535)"),
        })?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
        Ok(Self { rank, world_size, local_rank, master_addr, master_port, agent_store })
    }
}

/// `torch.distributed`'s default group: gloo for CPU tensors, and, made
/// with [`ProcessGroup::with_nccl`], NCCL for CUDA tensors.
pub struct ProcessGroup {
    group: NonNull<CeGroup>,
    rank: usize,
    world_size: usize,
}

// SAFETY: c10d's ProcessGroup and store are used from one thread at a time
// here (&mut self or a single caller); c10d itself is thread-safe.
unsafe impl Send for ProcessGroup {}

/// The gloo devices' network interfaces, `GLOO_SOCKET_IFNAME` (comma
/// separated) as PyTorch reads it; none where unset.
fn gloo_socket_ifname() -> Vec<String> {
    let names = std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default();
    names.split(',').filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Whether this build has c10d's NCCL backend (`dist.is_nccl_available()`):
/// built against a libtorch with CUDA, with NCCL's and CUDA's headers
/// (build.rs; build-notes.md, "NCCL").
pub fn nccl_built() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { ce_dist_nccl_built() != 0 }
}

/// `dist.init_process_group("gloo", init_method="env://", timeout=timeout)`.
pub fn init_from_env(timeout: Duration) -> Result<ProcessGroup, DistributedError> {
    ProcessGroup::new(&Rendezvous::from_env()?, timeout)
}

impl ProcessGroup {
    /// Joins the job `rdv` describes: rank 0 (or torchrun's agent) hosts
    /// the TCPStore, every rank waits up to `timeout` for all the others,
    /// and collectives fail after `timeout` too. The gloo devices are those
    /// of `GLOO_SOCKET_IFNAME` when set, as in PyTorch.
    pub fn new(rdv: &Rendezvous, timeout: Duration) -> Result<Self, DistributedError> {
        Self::join(rdv, timeout, &gloo_socket_ifname(), None)
    }

    /// `dist.init_process_group("cpu:gloo,cuda:nccl", ...)`: [`ProcessGroup::new`]
    /// and c10d's `ProcessGroupNCCL` for CUDA tensors (DDP's gradients on a
    /// GPU), gloo still for CPU tensors (the reduced metrics), after
    /// `torch.cuda.set_device(rdv.local_rank)`: each rank's GPU is
    /// `cuda:LOCAL_RANK`, its own (NCCL refuses two ranks on one device).
    /// An error where this build has no NCCL ([`nccl_built`]) or libtorch
    /// sees no GPU.
    pub fn with_nccl(rdv: &Rendezvous, timeout: Duration) -> Result<Self, DistributedError> {
        Self::join(rdv, timeout, &gloo_socket_ifname(), Some(rdv.local_rank))
    }

    /// [`ProcessGroup::new`] with gloo devices on these network interfaces
    /// (`["lo"]`: the loopback only); none: the default device (this
    /// host's name, else the loopback).
    pub fn with_interfaces(
        rdv: &Rendezvous,
        timeout: Duration,
        interfaces: &[&str],
    ) -> Result<Self, DistributedError> {
        Self::join(rdv, timeout, interfaces, None)
    }

    fn join(
        rdv: &Rendezvous,
        timeout: Duration,
        interfaces: &[impl AsRef<str>],
        cuda_device: Option<usize>,
    ) -> Result<Self, DistributedError> {
        let host = CString::new(rdv.master_addr.as_str()).map_err(DistributedError::Nul)?;
        let interfaces: Vec<&str> = interfaces.iter().map(AsRef::as_ref).collect();
        let interfaces = CString::new(interfaces.join(",")).map_err(DistributedError::Nul)?;
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: NUL-terminated strings that outlive the call.
        let group = unsafe {
            ce_dist_init(
                rdv.rank as c_int,
                rdv.world_size as c_int,
                host.as_ptr(),
                c_int::from(rdv.master_port),
                c_int::from(rdv.agent_store),
                timeout_ms,
                interfaces.as_ptr(),
                cuda_device.map_or(-1, |d| d as c_int),
            )
        };
        let group =
            NonNull::new(group).ok_or_else(|| DistributedError::Init(crate::ffi::last_error()))?;
        Ok(Self { group, rank: rdv.rank, world_size: rdv.world_size })
    }

    /// `dist.get_rank()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// `dist.get_world_size()`.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    fn check(&self, op: &'static str, status: c_int) -> Result<(), DistributedError> {
        if status == 0 {
            Ok(())
        } else {
            Err(DistributedError::Collective { op, message: crate::ffi::last_error() })
        }
    }

    /// `dist.all_reduce(t)`: the sum over all ranks, in place.
    pub fn all_reduce_sum(&mut self, t: &mut Tensor) -> Result<(), DistributedError> {
        // SAFETY: a live group and tensor, used for the call only.
        let status = unsafe { ce_dist_all_reduce_sum(self.group.as_ptr(), t.as_mut_ptr()) };
        self.check("all_reduce", status)
    }

    /// `dist.broadcast(t, src=root)`: rank `root`'s values, in place.
    pub fn broadcast(&mut self, t: &mut Tensor, root: usize) -> Result<(), DistributedError> {
        // SAFETY: as in all_reduce_sum.
        let status =
            unsafe { ce_dist_broadcast(self.group.as_ptr(), t.as_mut_ptr(), root as c_int) };
        self.check("broadcast", status)
    }

    /// `dist.barrier()`.
    pub fn barrier(&mut self) -> Result<(), DistributedError> {
        // SAFETY: a live group.
        let status = unsafe { ce_dist_barrier(self.group.as_ptr()) };
        self.check("barrier", status)
    }

    /// `store.set(key, value)` on the job's store (unprefixed).
    pub fn store_set(&mut self, key: &str, value: &[u8]) -> Result<(), DistributedError> {
        let key = CString::new(key).map_err(DistributedError::Nul)?;
        // SAFETY: a live group, a NUL-terminated key, `value` for the call.
        let status = unsafe {
            ce_dist_store_set(self.group.as_ptr(), key.as_ptr(), value.as_ptr(), value.len() as i64)
        };
        self.check("store.set", status)
    }

    /// `store.get(key)`: waits for the key up to the group's timeout.
    pub fn store_get(&mut self, key: &str) -> Result<Vec<u8>, DistributedError> {
        let key = CString::new(key).map_err(DistributedError::Nul)?;
        let mut out = vec![0u8; 256];
        loop {
            // SAFETY: a live group, a NUL-terminated key, `out` of its length.
            let n = unsafe {
                ce_dist_store_get(
                    self.group.as_ptr(),
                    key.as_ptr(),
                    out.as_mut_ptr(),
                    out.len() as i64,
                )
            };
            if n < 0 {
                self.check("store.get", -1)?;
            }
            let n = n as usize;
            if n <= out.len() {
                out.truncate(n);
                return Ok(out);
            }
            out.resize(n, 0);
        }
    }

    /// Checks that every rank was started with the same `what` (their
    /// `fingerprint`, e.g. a hash of the settings), through the store: each
    /// rank publishes its own and reads all the others', so every rank of
    /// a mismatched job stops with the same error instead of waiting in the
    /// first collective. A collective: every rank calls it once.
    pub fn check_same(&mut self, what: &str, fingerprint: &[u8]) -> Result<(), DistributedError> {
        let key = |rank: usize| format!("cross-entropy-tch/{what}/{rank}");
        self.store_set(&key(self.rank), fingerprint)?;
        let first = self.store_get(&key(0))?;
        for rank in 1..self.world_size {
            if self.store_get(&key(rank))? != first {
                return Err(DistributedError::Mismatch { what: what.to_string(), rank });
            }
        }
        Ok(())
    }

    /// DDP's start (`_sync_module_states`): every parameter takes rank 0's
    /// values, so all ranks start from the same model.
    pub fn broadcast_parameters(&mut self, vs: &VarStore) -> Result<(), DistributedError> {
        let _guard = tch::no_grad_guard();
        for mut p in sorted_variables(vs) {
            self.broadcast(&mut p, 0)?;
        }
        Ok(())
    }

    /// DDP's gradient averaging after `loss.backward()`, as its reducer
    /// does it with one bucket (see the module's doc): `grad * (1 /
    /// world_size)` of every parameter into one flat bucket in reverse
    /// parameter order (the parameters in `named_parameters()` order: by
    /// name, which is the definition order of this crate's models), one
    /// allreduce-sum, and the bucket's values back into the gradients.
    pub fn all_reduce_gradients(&mut self, vs: &VarStore) -> Result<(), DistributedError> {
        let _guard = tch::no_grad_guard();
        let params: Vec<Tensor> = sorted_variables(vs).into_iter().rev().collect();
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        if grads.iter().any(|g| !g.defined()) {
            return Err(DistributedError::Collective {
                op: "all_reduce_gradients",
                message: "a parameter has no gradient (call backward first)".to_string(),
            });
        }
        // mark_variable_ready_dense: at::mul_out(bucket_view, grad,
        // wrapped_scalar_tensor(1. / div_factor)), a double scalar that
        // ATen applies in the gradient's dtype.
        let factor = 1.0 / self.world_size as f64;
        let flat: Vec<Tensor> = grads.iter().map(|g| (g * factor).flatten(0, -1)).collect();
        let mut bucket = Tensor::cat(&flat, 0);
        self.all_reduce_sum(&mut bucket)?;
        let mut offset = 0;
        for mut g in grads {
            let n = g.numel() as i64;
            g.copy_(&bucket.narrow(0, offset, n).view_as(&g));
            offset += n;
        }
        Ok(())
    }
}

/// The parameters by name: `named_parameters()`'s order for this crate's
/// models (`linear.weight`, `linear.bias`; `layers.0.weight`, ...).
fn sorted_variables(vs: &VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by_key(|(name, _)| parameter_order(name));
    named.into_iter().map(|(_, t)| t).collect()
}

/// `layers.10.weight` after `layers.9.bias`; weight before bias.
fn parameter_order(name: &str) -> (Vec<(u64, String)>, bool) {
    let parts: Vec<&str> = name.split('.').collect();
    let (last, path) = parts.split_last().unwrap_or((&"", &[]));
    let path = path.iter().map(|p| (p.parse().unwrap_or(u64::MAX), p.to_string())).collect();
    (path, *last != "weight")
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the group was made by ce_dist_init and is freed once.
        unsafe { ce_dist_free(self.group.as_ptr()) }
    }
}

/// `DistributedDataParallel(model)` on the CPU, with c10d's own Reducer
/// (csrc/distributed.cpp's `ce_ddp_new` says which of DDP's defaults): on
/// construction the parameters' shapes are checked across ranks and rank
/// 0's values broadcast to all; around each forward call
/// [`DistributedDataParallel::forward`] does what DDP's `forward` does
/// around the module's; and `loss.backward()` then averages the gradients
/// over the ranks exactly as DDP's does (the Reducer's hooks on the
/// parameters), bit for bit at any world size, and it joins a job whose
/// other ranks are PyTorch's DDP.
///
/// ```text
/// model = DDP(model)                 let mut ddp = DistributedDataParallel::new(&mut pg, &vs)?;
/// out = model(x)                     let out = ddp.forward(|| model.forward(&x))?;
/// loss.backward()                    loss.backward();
/// ```
pub struct DistributedDataParallel {
    ddp: NonNull<CeDdp>,
}

// SAFETY: as ProcessGroup: used from one thread at a time.
unsafe impl Send for DistributedDataParallel {}

impl DistributedDataParallel {
    /// Wraps the trainable variables of `vs` (in `model.parameters()`
    /// order; see [`ProcessGroup::broadcast_parameters`]). A collective:
    /// every rank calls it.
    pub fn new(pg: &mut ProcessGroup, vs: &VarStore) -> Result<Self, DistributedError> {
        let params = sorted_variables(vs);
        let ptrs: Vec<*const torch_sys::C_tensor> = params.iter().map(Tensor::as_ptr).collect();
        // SAFETY: live tensors for the call (the C++ side keeps its own
        // references), a live group.
        let ddp = unsafe { ce_ddp_new(pg.group.as_ptr(), ptrs.as_ptr(), ptrs.len() as i64) };
        let ddp = NonNull::new(ddp).ok_or_else(|| DistributedError::Collective {
            op: "DistributedDataParallel",
            message: crate::ffi::last_error(),
        })?;
        Ok(Self { ddp })
    }

    /// `ddp(x)`: `forward` (the module's forward) between DDP's
    /// `_pre_forward` (rebuilding the buckets once, after the first
    /// iteration) and `_post_forward` (arming the Reducer for the
    /// backward pass). Call it once per training step, with gradients on.
    pub fn forward<T>(&mut self, forward: impl FnOnce() -> T) -> Result<T, DistributedError> {
        let fail = |op| DistributedError::Collective { op, message: crate::ffi::last_error() };
        // SAFETY: a live Reducer.
        if unsafe { ce_ddp_pre_forward(self.ddp.as_ptr()) } != 0 {
            return Err(fail("DDP forward (rebuilding the buckets)"));
        }
        let out = forward();
        // SAFETY: as above.
        if unsafe { ce_ddp_post_forward(self.ddp.as_ptr()) } != 0 {
            return Err(fail("DDP forward (prepare_for_backward)"));
        }
        Ok(out)
    }
}

impl Drop for DistributedDataParallel {
    fn drop(&mut self) {
        // SAFETY: made by ce_ddp_new, freed once.
        unsafe { ce_ddp_free(self.ddp.as_ptr()) }
    }
}

/// The rows `DistributedSampler(dataset of n rows, num_replicas=world_size,
/// rank=rank, shuffle=shuffle, seed=seed, drop_last=False)` gives rank
/// `rank` after `sampler.set_epoch(epoch)`, in its order:
///
/// ```python
/// g = torch.Generator(); g.manual_seed(seed + epoch)  # shuffle only
/// indices = torch.randperm(n, generator=g).tolist()   # else list(range(n))
/// indices += indices[:total_size - n]   # padded to a multiple of world_size
/// indices = indices[rank:total_size:world_size]       # ceil(n / world_size)
/// ```
pub fn sampler_indices(
    n: usize,
    world_size: usize,
    rank: usize,
    shuffle: bool,
    seed: i64,
    epoch: i64,
) -> Result<Vec<i64>, crate::rng::RngError> {
    let indices: Vec<i64> = if shuffle {
        let perm = crate::rng::randperm_with_seed(n as i64, seed.wrapping_add(epoch))?;
        Vec::<i64>::try_from(&perm).map_err(|e| crate::rng::RngError(e.to_string()))?
    } else {
        (0..n as i64).collect()
    };
    let num_samples = n.div_ceil(world_size);
    let total_size = num_samples * world_size;
    // indices += (indices * ceil(padding / n))[:padding], which is also
    // the `padding <= n` branch's indices[:padding].
    let padded: Vec<i64> = indices.iter().copied().cycle().take(total_size).collect();
    Ok(padded.into_iter().skip(rank).step_by(world_size).collect())
}

/// `sizeof(ProcessGroupGloo)` and `sizeof(ProcessGroupGloo::Options)` as
/// csrc/gloo.cpp's headers see them (the layout test compares them with
/// libtorch's; build-notes.md).
pub fn gloo_header_sizes() -> (usize, usize) {
    // SAFETY: no arguments, no state.
    unsafe { (ce_dist_gloo_backend_size(), ce_dist_gloo_options_size()) }
}
