// The one last-error mechanism of our C++ (csrc/*.cpp): each extern "C"
// function runs its body through ce::guarded, which catches a C++ exception,
// remembers its message and returns the function's failure value; Rust
// reads the message with ce_last_error() (src/ffi.rs). No C++ exception
// crosses into Rust.
#pragma once

#include <exception>

namespace ce {
void remember(const char* what);

// body(), or on_error after remembering the message of what it threw.
template <class R, class F>
R guarded(R on_error, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    remember(e.what());
    return on_error;
  }
}
}  // namespace ce
