// The one last-error mechanism of our C++ (csrc/*.cpp): a function that
// catches a C++ exception calls ce::remember(e.what()) and returns its
// failure value; Rust reads the message with ce_last_error() (src/ffi.rs).
#pragma once

namespace ce {
void remember(const char* what);
}
