// The subcommands of `kclip`: version, info, inspect, convert.
#include "commands.h"

#include "args.h"

#include <kclip/kclip.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

namespace kclip::cli {
namespace {

int run_version(const std::vector<std::string>& argv) {
  Args args(argv, {}, {});
  fmt::print("kclip {}\n", version());
  return 0;
}

int run_info(const std::vector<std::string>& argv) {
  Args args(argv, {}, {});
  fmt::print("{}", runtime_summary());
  return 0;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  return fmt::format("{:.1f} {}", bytes, units[u]);
}

int run_inspect(const std::vector<std::string>& argv) {
  Args args(argv, {}, {"quiet"});
  if (args.positional().size() != 1) fail_value("inspect expects one PATH (a .safetensors file, an index or a directory)");
  const std::string path = args.positional()[0];
  TensorDict tensors = load_safetensors(path);
  int64_t elements = 0, bytes = 0;
  for (const auto& item : tensors) {
    const at::Tensor& t = item.value();
    elements += t.numel();
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
    if (!args.has("quiet"))
      fmt::print("{:<60} {:<5} [{}]\n", item.key(), safetensors_dtype_name(t.scalar_type()), fmt::join(t.sizes(), ", "));
  }
  fmt::print("{}: {} tensors, {} elements, {}\n", path, tensors.size(), elements, human_bytes(double(bytes)));
  for (const auto& [key, value] : load_safetensors_metadata(path)) fmt::print("  metadata {} = {}\n", key, value);
  return 0;
}

// `--dtype` names: the safetensors names and PyTorch's.
at::ScalarType parse_float_dtype(const std::string& name) {
  if (name == "f32" || name == "F32" || name == "float32") return at::kFloat;
  if (name == "f16" || name == "F16" || name == "float16") return at::kHalf;
  if (name == "bf16" || name == "BF16" || name == "bfloat16") return at::kBFloat16;
  if (name == "f64" || name == "F64" || name == "float64") return at::kDouble;
  fail_value("--dtype '{}': expected f32, f16, bf16 or f64", name);
}

int run_convert(const std::vector<std::string>& argv) {
  Args args(argv, {"dtype", "metadata"}, {});
  if (args.positional().size() != 2) fail_value("convert expects INPUT and OUTPUT paths");
  const std::string input = args.positional()[0], output = args.positional()[1];
  TensorDict tensors = load_safetensors(input);
  if (args.has("dtype")) {
    const at::ScalarType target = parse_float_dtype(args.get("dtype"));
    for (auto& item : tensors)  // only floating tensors change: ids, counts and masks keep their type
      if (at::isFloatingType(item.value().scalar_type())) item.value() = item.value().to(target);
  }
  Metadata metadata = load_safetensors_metadata(input);
  metadata.erase("total_size");  // a shard index's byte count; wrong once merged and cast
  if (args.has("metadata")) {
    const std::string kv = args.get("metadata");
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail_value("--metadata '{}': expected KEY=VALUE", kv);
    metadata[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  save_safetensors(output, tensors, metadata);
  fmt::print("wrote {} ({} tensors)\n", output, tensors.size());
  return 0;
}

}  // namespace

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"version", "", "print kclip's version", run_version},
      {"info", "", "print versions, threads and the BLAS library in use", run_info},
      {"inspect", "PATH [--quiet]", "list the tensors and metadata of a safetensors file, index or directory",
       run_inspect},
      {"convert", "INPUT OUTPUT [--dtype f32|f16|bf16|f64] [--metadata KEY=VALUE]",
       "merge a (sharded) safetensors checkpoint into one file, optionally casting floating tensors", run_convert},
  };
  return all;
}

}  // namespace kclip::cli
