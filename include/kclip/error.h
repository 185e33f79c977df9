#pragma once
// kclip's two exception types. Every message names what was wrong: the file, the field, and what was expected.
//
//   kclip::Error       bad data or a failed operation (a corrupt file, an I/O failure). Python: kclip.Error,
//                      a subclass of RuntimeError.
//   kclip::ValueError  a bad argument from the caller (unknown option, wrong shape). Python: ValueError.
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

#include <stdexcept>
#include <string>
#include <utility>

namespace kclip {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// fail("{}: tensor '{}': ...", path, name) throws kclip::Error with the formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// fail_value(...) throws kclip::ValueError with the formatted message.
template <typename... Args>
[[noreturn]] void fail_value(fmt::format_string<Args...> format, Args&&... args) {
  throw ValueError(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace kclip
