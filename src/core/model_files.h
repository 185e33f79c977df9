#pragma once
// Helpers shared by the model loaders (private header): reading a JSON config and copying a checkpoint's tensors
// into a module's parameters after checking that every name and shape fits.
#include <kclip/error.h>
#include <kclip/safetensors.h>

#include "checks.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <nlohmann/json.hpp>
#include <torch/ordered_dict.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <unistd.h>
#include <string>
#include <vector>

namespace kclip::detail {

// Writes text through a temporary file and a rename: readers see the old file or the new one, never half.
inline void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path temp = path.parent_path() / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  {
    std::ofstream out(temp, std::ios::binary);
    out << text;
    out.flush();
    if (!out) {
      out.close();
      std::filesystem::remove(temp, ec);  // no half-written temporary left behind (e.g. disk full)
      fail("{}: cannot write (disk full or not writable?); {} is unchanged", temp.string(), path.string());
    }
  }
  std::filesystem::rename(temp, path, ec);
  if (ec) {
    std::filesystem::remove(temp, ec);
    fail("{}: cannot replace: {}", path.string(), ec.message());
  }
}

inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {  // syntax, and numbers out of range (1e309)
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

// An integer field of a JSON file. nlohmann's get<int64_t>() converts a float such as 1.3e21 with a plain cast,
// undefined behaviour out of range (found by tests/fuzz/fuzz_config_json): integers pass, floats only when
// integral and in range; anything else is a json::type_error, which the readers turn into an error naming
// the file.
inline int64_t json_int(const nlohmann::json& v) {
  if (v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX}))
    return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.2e18) return static_cast<int64_t>(d);
  }
  throw nlohmann::json::type_error::create(302, "expected an integer, got " + v.dump(), nullptr);
}

// obj[key] == value for a JSON object holding that string; false for anything else (never throws, unlike
// nlohmann's value(), which throws when the key holds another type).
inline bool json_field_is(const nlohmann::json& obj, const char* key, const std::string& value) {
  if (!obj.is_object()) return false;
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() && it->get_ref<const std::string&>() == value;
}

// Copies state[name] into each parameter. Missing, unexpected (unless `ignorable`) and misshaped (unless
// `fits`) tensors are collected into one kclip::Error naming `source` and `model`.
inline void load_parameters(torch::OrderedDict<std::string, at::Tensor> params, const TensorDict& state,
                            const std::string& source, const char* model,
                            const std::function<bool(const std::string&)>& ignorable,
                            const std::function<bool(const at::Tensor&, const at::Tensor&)>& fits) {
  std::vector<std::string> missing, unexpected, misshaped;
  for (const auto& p : params)
    if (!state.contains(p.key())) missing.push_back(p.key());
  for (const auto& item : state) {
    const at::Tensor* param = params.find(item.key());
    if (param == nullptr) {
      if (!ignorable(item.key())) unexpected.push_back(item.key());
    } else if (!at::isFloatingType(item.value().scalar_type())) {
      misshaped.push_back(fmt::format("{} has dtype {} (expected floating point)", item.key(),
                                      c10::toString(item.value().scalar_type())));
    } else if (!fits(*param, item.value())) {
      misshaped.push_back(fmt::format("{} {} (expected {})", item.key(), shape_of(item.value()), shape_of(*param)));
    }
  }
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty())
    fail("{}: checkpoint does not fit the {} config: missing [{}]; unexpected [{}]; misshaped [{}]", source, model,
         fmt::join(missing, ", "), fmt::join(unexpected, ", "), fmt::join(misshaped, ", "));
  at::NoGradGuard no_grad;
  for (auto& p : params) p.value().copy_(state[p.key()].reshape(p.value().sizes()));
}

// Config sizes checked against the tensors in the files before a model is built from the config: a config
// whose sizes disagree with the weights (or are absurd) is one error naming the field, never an allocation of
// whatever the config claims.
class ConfigCheck {
 public:
  ConfigCheck(const TensorDict& weights, std::string config, std::string source)
      : weights_(weights), config_(std::move(config)), source_(std::move(source)) {}

  // The tensor's shape; a missing tensor or one with fewer than `min_dims` dimensions is an error.
  std::vector<int64_t> shape(const std::string& tensor, int64_t min_dims) const {
    if (!weights_.contains(tensor))
      fail("{}: the weights have no tensor '{}' (needed to check {})", source_, tensor, config_);
    std::vector<int64_t> sizes = weights_[tensor].sizes().vec();
    if (static_cast<int64_t>(sizes.size()) < min_dims)
      fail("{}: tensor '{}' has shape {}: expected {} dimensions", source_, tensor, shape_of(weights_[tensor]), min_dims);
    return sizes;
  }
  // field = value must equal what the weights show (`actual`, seen in `evidence`).
  void expect(const char* field, int64_t value, int64_t actual, const std::string& evidence) const {
    if (value != actual)
      fail("{}: {} = {}, but the weights have {} ({}): the config does not describe these weights", config_, field,
           value, actual, evidence);
  }
  // Number of distinct N in tensor names "<prefix>N.".
  int64_t count_blocks(const std::string& prefix) const {
    std::set<int64_t> blocks;
    for (const auto& item : weights_) {
      const std::string& name = item.key();
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::size_t end = name.find('.', prefix.size());
      const std::string digits = name.substr(prefix.size(), end == std::string::npos ? std::string::npos : end - prefix.size());
      if (!digits.empty() && digits.size() < 10 && digits.find_first_not_of("0123456789") == std::string::npos)
        blocks.insert(std::stoll(digits));
    }
    return static_cast<int64_t>(blocks.size());
  }

 private:
  const TensorDict& weights_;
  std::string config_, source_;
};

}  // namespace kclip::detail
