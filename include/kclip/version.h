#pragma once
// kclip's version, kept in step with CMakeLists.txt's project(VERSION) and pyproject.toml.
#define KCLIP_VERSION_MAJOR 0
#define KCLIP_VERSION_MINOR 1
#define KCLIP_VERSION_PATCH 0
#define KCLIP_VERSION_STRING "0.1.0"

namespace kclip {
inline constexpr const char* version() { return KCLIP_VERSION_STRING; }
}  // namespace kclip
