//! The state of libtorch's default CPU generator, the one `tch::manual_seed`
//! seeds and every CPU draw (`randperm`, `uniform_`, dropout's `bernoulli_`)
//! advances: `torch.get_rng_state()` and `torch.set_rng_state()`, which tch
//! does not bind (`csrc/rng.cpp` does, built by `build.rs`). The bytes are
//! PyTorch's own format, so a state saved here restores in PyTorch and the
//! other way round.
//!
//! ```python
//! state = torch.get_rng_state()   # rng::cpu_state()
//! torch.set_rng_state(state)      # rng::set_cpu_state(&state)
//! ```

use std::fmt;

extern "C" {
    fn ce_cpu_rng_get_state(out: *mut u8, cap: i64) -> i64;
    fn ce_cpu_rng_set_state(bytes: *const u8, len: i64) -> std::os::raw::c_int;
    fn ce_randperm_with_seed(n: i64, seed: u64) -> *mut torch_sys::C_tensor;
}

/// libtorch refused to read or set the generator's state.
#[derive(Debug, Clone, PartialEq)]
pub struct RngError(pub String);

impl fmt::Display for RngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the CPU generator's state: {}", self.0)
    }
}

impl std::error::Error for RngError {}

fn last_error() -> RngError {
    RngError(crate::ffi::last_error())
}

/// `torch.get_rng_state()`: the default CPU generator's state.
pub fn cpu_state() -> Result<Vec<u8>, RngError> {
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: `buf` has `buf.len()` writable bytes.
        let n = unsafe { ce_cpu_rng_get_state(buf.as_mut_ptr(), buf.len() as i64) };
        if n < 0 {
            return Err(last_error());
        }
        if n as usize <= buf.len() {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        buf.resize(n as usize, 0);
    }
}

/// `torch.set_rng_state(state)`: libtorch checks the size and version.
pub fn set_cpu_state(state: &[u8]) -> Result<(), RngError> {
    // SAFETY: `state` is `state.len()` readable bytes.
    if unsafe { ce_cpu_rng_set_state(state.as_ptr(), state.len() as i64) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// `torch.randperm(n, generator=g)` after `g = torch.Generator();
/// g.manual_seed(seed)`: drawn from a generator of its own, so the default
/// one (dropout's, the split's) does not move. What `DistributedSampler`
/// shuffles with, `seed` being its `seed + epoch`. A negative seed is
/// taken as PyTorch takes it (its 64-bit two's complement).
pub fn randperm_with_seed(n: i64, seed: i64) -> Result<tch::Tensor, RngError> {
    // SAFETY: no pointers in; a new tensor or null out.
    let t = unsafe { ce_randperm_with_seed(n, seed as u64) };
    crate::ffi::owned_tensor(t).map_err(|e| RngError(e.to_string()))
}
