#include <kclip/distributed.h>
#include <kclip/error.h>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/version.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

namespace kclip {

int rank_of(const ProcessGroupPtr& group) { return group ? group->getRank() : 0; }
int world_size_of(const ProcessGroupPtr& group) { return group ? group->getSize() : 1; }

namespace {

std::vector<at::Tensor> gather_pieces(const at::Tensor& local, const ProcessGroupPtr& group) {
  std::vector<at::Tensor> input{local.contiguous()};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < group->getSize(); ++r) output[0].push_back(at::empty_like(input[0]));
  group->allgather(output, input)->wait();
  return output[0];
}

}  // namespace

at::Tensor all_gather(const at::Tensor& x, const ProcessGroupPtr& group, bool with_grad) {
  if (world_size_of(group) == 1) return x;
  std::vector<at::Tensor> pieces = gather_pieces(x.detach(), group);
  pieces[rank_of(group)] = x;  // the local rows keep their autograd history
  at::Tensor gathered = at::cat(pieces, 0);
  if (with_grad && x.requires_grad()) {
    // Every rank's loss depends on every rank's rows. Summing the gathered gradient over ranks before cat's
    // backward hands each rank's slice (its x) the gradient of all ranks' losses.
    ProcessGroupPtr keep = group;
    gathered.register_hook([keep](const at::Tensor& grad) {
      std::vector<at::Tensor> summed{grad.contiguous().clone()};
      keep->allreduce(summed)->wait();
      return summed[0];
    });
  }
  return gathered;
}

// ---- set-up and collectives for the trainer ----------------------------------------------------------------------

namespace {

std::string env(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

int64_t env_int(const char* name, int64_t fallback) {
  const std::string text = env(name);
  if (text.empty()) return fallback;
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  fail_value("environment variable {}='{}': expected an integer", name, text);
}

// NCCL reduces CUDA tensors only (on this process's current device); Gloo takes CPU tensors.
c10::Device collective_device(const ProcessGroupPtr& group) {
  if (group->getBackendName() != "nccl") return c10::kCPU;
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getDevice();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// LibTorch 2 splits process groups into a front (ProcessGroup) and per-device backends; 1.x backends are groups.
template <typename BackendPtr>
ProcessGroupPtr as_group(BackendPtr backend, const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                         bool nccl) {
#if TORCH_VERSION_MAJOR >= 2
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
  const auto type = nccl ? c10d::ProcessGroup::BackendType::NCCL : c10d::ProcessGroup::BackendType::GLOO;
  group->setDefaultBackend(type);
  group->setBackend(nccl ? c10::DeviceType::CUDA : c10::DeviceType::CPU, type, backend);
  return group;
#else
  (void)store, (void)rank, (void)world, (void)nccl;
  return backend;
#endif
}

// torchrun's rendezvous: the TCPStore, then the backend.
ProcessGroupPtr connect(const std::string& backend, double timeout_seconds) {
  const int64_t world = env_int("WORLD_SIZE", 1);
  if (world <= 1) return {};
  const int64_t rank = env_int("RANK", -1);
  if (rank < 0 || rank >= world) fail_value("environment: RANK={} with WORLD_SIZE={}: expected 0 <= RANK < WORLD_SIZE", rank, world);
  const std::string host = env("MASTER_ADDR");
  const int64_t port = env_int("MASTER_PORT", -1);
  if (host.empty() || port <= 0 || port > 65535)
    fail_value("environment: WORLD_SIZE={} needs MASTER_ADDR and MASTER_PORT (torchrun sets them)", world);
  if (!(timeout_seconds > 0)) fail_value("init_process_group_from_env: timeout {} must be positive", timeout_seconds);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));

  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.numWorkers = static_cast<size_t>(world);
  options.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  if (env("TORCHELASTIC_USE_AGENT_STORE") == "True") {  // torchrun's agent already serves the store
    options.isServer = false;
    options.waitWorkers = false;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(host, options);
    store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + env("TORCHELASTIC_RESTART_COUNT", "0"), tcp);
  } else {
    options.isServer = rank == 0;
    options.multiTenant = true;
    store = c10::make_intrusive<c10d::TCPStore>(host, options);
  }

  const int r = static_cast<int>(rank), w = static_cast<int>(world);
  if (backend == "gloo") {
    auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
    const std::string ifname = env("GLOO_SOCKET_IFNAME");
    if (!ifname.empty()) gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (is_loopback(host)) gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    return as_group(c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, w, gloo), store, r, w, false);
  }
  if (backend == "nccl") {
#ifdef USE_C10D_NCCL
    auto nccl = c10d::ProcessGroupNCCL::Options::create();
    nccl->timeout = timeout;
    return as_group(c10::make_intrusive<c10d::ProcessGroupNCCL>(store, r, w, nccl), store, r, w, true);
#else
    fail_value("backend nccl: this LibTorch was built without NCCL (use gloo)");
#endif
  }
  fail_value("process group backend '{}': expected gloo or nccl", backend);
}

}  // namespace

// Connection failures (a peer that never comes, a port in use) become one error naming the rendezvous.
ProcessGroupPtr init_process_group_from_env(const std::string& backend, double timeout_seconds) {
  try {
    return connect(backend, timeout_seconds);
  } catch (const Error&) {
    throw;
  } catch (const ValueError&) {
    throw;
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    fail("rank {} of {}: cannot form the {} process group at {}:{} within {} s: {}", env("RANK", "?"),
         env("WORLD_SIZE", "?"), backend, env("MASTER_ADDR", "?"), env("MASTER_PORT", "?"), timeout_seconds,
         c10_error ? c10_error->what_without_backtrace() : e.what());
  }
}

void all_reduce_mean_(const std::vector<at::Tensor>& tensors, const ProcessGroupPtr& group, int64_t bucket_bytes) {
  const int world = world_size_of(group);
  if (world == 1) return;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& t : tensors) {
    if (!t.is_contiguous()) fail_value("all_reduce_mean_: tensors must be contiguous");
    const at::Tensor flat = t.view({-1});
    const int64_t chunk = std::max<int64_t>(1, bucket_bytes / static_cast<int64_t>(t.element_size()));
    for (int64_t start = 0; start < flat.numel(); start += chunk) {
      std::vector<at::Tensor> piece{flat.narrow(0, start, std::min(chunk, flat.numel() - start))};
      works.push_back(group->allreduce(piece));
    }
  }
  for (auto& w : works) w->wait();
  for (const auto& t : tensors) t.div_(world);
}

void broadcast_(const std::vector<at::Tensor>& tensors, const ProcessGroupPtr& group, int root) {
  if (world_size_of(group) == 1) return;
  c10d::BroadcastOptions options;
  options.rootRank = root;
  for (const auto& t : tensors) {
    std::vector<at::Tensor> one{t.is_contiguous() ? t : t.contiguous()};
    group->broadcast(one, options)->wait();
    if (!t.is_contiguous()) t.copy_(one[0]);
  }
}

std::vector<std::vector<int64_t>> all_gather_ints(const std::vector<int64_t>& values, const ProcessGroupPtr& group) {
  const int world = world_size_of(group);
  if (world == 1) return {values};
  const at::Tensor mine = at::tensor(values, at::kLong).to(collective_device(group));
  const auto pieces = gather_pieces(mine, group);
  std::vector<std::vector<int64_t>> out;
  for (const auto& piece : pieces) {
    const at::Tensor p = piece.cpu();
    out.emplace_back(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
  }
  return out;
}

namespace {
std::vector<int64_t> reduce_ints(const std::vector<int64_t>& values, const ProcessGroupPtr& group, c10d::ReduceOp op) {
  if (world_size_of(group) == 1) return values;
  std::vector<at::Tensor> t{at::tensor(values, at::kLong).to(collective_device(group))};
  c10d::AllreduceOptions options;
  options.reduceOp = op;
  group->allreduce(t, options)->wait();
  const at::Tensor result = t[0].cpu();
  return std::vector<int64_t>(result.data_ptr<int64_t>(), result.data_ptr<int64_t>() + result.numel());
}
}  // namespace

std::vector<int64_t> all_reduce_min(const std::vector<int64_t>& values, const ProcessGroupPtr& group) {
  return reduce_ints(values, group, c10d::ReduceOp::MIN);
}
std::vector<int64_t> all_reduce_max(const std::vector<int64_t>& values, const ProcessGroupPtr& group) {
  return reduce_ints(values, group, c10d::ReduceOp::MAX);
}

}  // namespace kclip
