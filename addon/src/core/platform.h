// The few operating-system calls the core needs, behind one small interface (POSIX and Windows
// implementations live in platform.cc).
#pragma once
#include <cstdint>
#include <string>

namespace bmrt {

// Reads exactly `bytes` bytes at `offset` of the file at `path` into `out`; throws
// std::runtime_error naming the file on failure or a short read.
void read_file_range(const std::string& path, uint64_t offset, uint64_t bytes, void* out);

}  // namespace bmrt
