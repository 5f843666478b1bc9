// See error.h.
#include "error.h"

#include <cstring>

namespace {
thread_local char last_error[512];
}  // namespace

void ce::remember(const char* what) {
  std::strncpy(last_error, what, sizeof(last_error) - 1);
  last_error[sizeof(last_error) - 1] = '\0';
}

extern "C" const char* ce_last_error() { return last_error; }
