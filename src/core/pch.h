// Precompiled header for kclip's own translation units (not installed). LibTorch's headers take most of the
// compile time; precompiling them once per build keeps each source file cheap.
#pragma once
#include <torch/torch.h>
#include <fmt/format.h>
#include <filesystem>
#include <map>
#include <string>
#include <vector>
