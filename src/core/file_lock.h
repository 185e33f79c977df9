#pragma once
// An advisory lock on a directory one process writes (an embedding cache, a training run, a pipeline run): a
// second writer fails at once with one clear error instead of interleaving its files with the first one's.
// flock(2) on DIR/.lock, so the lock goes with the process however it ends (a killed run leaves no stale lock).
#include <kclip/error.h>

#include <filesystem>
#include <fcntl.h>
#include <string>
#include <sys/file.h>
#include <unistd.h>

namespace kclip::detail {

class DirectoryLock {
 public:
  DirectoryLock() = default;
  // `busy` is the error when another process holds the lock, after the directory's name.
  DirectoryLock(const std::filesystem::path& directory, const std::string& busy) {
    const std::filesystem::path lock = directory / ".lock";
    fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("{}: cannot create the lock file", lock.string());
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      fd_ = -1;
      fail("{}: {}", directory.string(), busy);
    }
  }
  DirectoryLock(DirectoryLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DirectoryLock& operator=(DirectoryLock&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the flock
  }

 private:
  int fd_ = -1;
};

}  // namespace kclip::detail
