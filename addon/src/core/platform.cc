// Positioned file reads: pread on POSIX, ReadFile with an OVERLAPPED offset on Windows.
#include "platform.h"
#include <algorithm>
#include <stdexcept>

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#endif

namespace bmrt {

#ifdef _WIN32

static std::wstring widen(const std::string& utf8) {
  int n = MultiByteToWideChar(CP_UTF8, 0, utf8.c_str(), -1, nullptr, 0);
  std::wstring out(n > 0 ? n - 1 : 0, L'\0');
  if (n > 1) MultiByteToWideChar(CP_UTF8, 0, utf8.c_str(), -1, &out[0], n);
  return out;
}

// Paths past MAX_PATH (260 characters) open only in their extended form, \\?\C:\... or
// \\?\UNC\server\share\..., which must be absolute and use backslashes. Shorter ones are left
// alone (relative paths keep working).
static std::wstring windows_path(const std::string& utf8) {
  std::wstring path = widen(utf8);
  if (path.size() < MAX_PATH || path.rfind(L"\\\\?\\", 0) == 0) return path;
  for (auto& c : path)
    if (c == L'/') c = L'\\';
  DWORD n = GetFullPathNameW(path.c_str(), 0, nullptr, nullptr);
  if (n == 0) return path;
  std::wstring full(n, L'\0');
  n = GetFullPathNameW(path.c_str(), n, &full[0], nullptr);
  full.resize(n);
  if (full.rfind(L"\\\\", 0) == 0) return L"\\\\?\\UNC\\" + full.substr(2);
  return L"\\\\?\\" + full;
}

void read_file_range(const std::string& path, uint64_t offset, uint64_t bytes, void* out) {
  HANDLE file = CreateFileW(windows_path(path).c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                            FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) throw std::runtime_error("cannot open " + path + " (error " + std::to_string(GetLastError()) + ")");
  char* dst = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < bytes) {
    DWORD chunk = static_cast<DWORD>(std::min<uint64_t>(bytes - done, 1u << 30));
    OVERLAPPED at = {};
    at.Offset = static_cast<DWORD>((offset + done) & 0xffffffffu);
    at.OffsetHigh = static_cast<DWORD>((offset + done) >> 32);
    DWORD got = 0;
    if (!ReadFile(file, dst + done, chunk, &got, &at) || got == 0) {
      CloseHandle(file);
      throw std::runtime_error(path + ": short read at byte " + std::to_string(offset + done) + " (truncated file?)");
    }
    done += got;
  }
  CloseHandle(file);
}

#else

void read_file_range(const std::string& path, uint64_t offset, uint64_t bytes, void* out) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  char* dst = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < bytes) {
    ssize_t got = pread(fd, dst + done, bytes - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      close(fd);
      throw std::runtime_error(path + ": short read at byte " + std::to_string(offset + done) + " (truncated file?)");
    }
    done += static_cast<uint64_t>(got);
  }
  close(fd);
}

#endif

}  // namespace bmrt
