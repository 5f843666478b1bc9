//! What our C++ (`csrc/`, built by `build.rs`) shares with its Rust callers:
//! the message of the last C++ exception it caught on this thread.

extern "C" {
    fn ce_last_error() -> *const std::os::raw::c_char;
}

/// The message of the last exception a `csrc/` function caught on this
/// thread (read right after that function reported a failure).
pub(crate) fn last_error() -> String {
    // SAFETY: a NUL-terminated thread-local buffer of csrc/error.cpp.
    unsafe { std::ffi::CStr::from_ptr(ce_last_error()) }.to_string_lossy().into_owned()
}

/// A tensor a `csrc/` function returned (allocated with `new`, as tch's
/// own), or on null the error it reported.
pub(crate) fn owned_tensor(t: *mut torch_sys::C_tensor) -> Result<tch::Tensor, tch::TchError> {
    if t.is_null() {
        return Err(tch::TchError::Torch(last_error()));
    }
    // SAFETY: non-null, a new tensor handed to us alone.
    Ok(unsafe { tch::Tensor::from_ptr(t) })
}
