// ContrastiveLoss across two processes from C++: each worker builds a c10d TCPStore and ProcessGroupGloo on
// loopback, computes the loss on its half of the batch, and saves loss and gradients; the test compares them
// with one process holding the whole batch. The workers are this test binary re-launched (see main.cpp).
#include "testing.h"

#include <kclip/loss_contrastive.h>
#include <kclip/safetensors.h>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

constexpr int kWorld = 2, kLocalBatch = 4, kDim = 5;

// The full batch every process derives identically.
std::pair<torch::Tensor, torch::Tensor> full_batch() {
  torch::manual_seed(0);
  auto img = torch::randn({kWorld * kLocalBatch, kDim}, torch::kDouble);
  auto txt = torch::randn({kWorld * kLocalBatch, kDim}, torch::kDouble);
  return {img, txt};
}

struct Config {
  bool local_loss, with_grad;
  std::string key() const { return std::to_string(int(local_loss)) + std::to_string(int(with_grad)); }
};
const std::vector<Config> kConfigs = {{false, false}, {false, true}, {true, false}, {true, true}};

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

pid_t spawn_worker(int rank, int port, const std::string& out) {
  std::vector<std::string> extra = {"KCLIP_DIST_RANK=" + std::to_string(rank), "KCLIP_DIST_PORT=" + std::to_string(port),
                                    "KCLIP_DIST_OUT=" + out};
  std::vector<char*> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  for (auto& s : extra) env.push_back(s.data());
  env.push_back(nullptr);
  char exe[] = "/proc/self/exe";
  char* argv[] = {exe, nullptr};
  pid_t pid = -1;
  REQUIRE(posix_spawn(&pid, exe, nullptr, nullptr, argv, env.data()) == 0);
  return pid;
}

// Exit status of `pid`, killing it after `seconds`.
int wait_for(pid_t pid, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void check_close(const torch::Tensor& a, const torch::Tensor& b) {
  CHECK_MESSAGE(torch::allclose(a, b, 0, 1e-10), a << " vs " << b);
}

}  // namespace

namespace kclip::testing {

// A worker: rank, port and output file from the environment.
int distributed_worker_main() try {
  const int rank = std::atoi(std::getenv("KCLIP_DIST_RANK"));
  const int port = std::atoi(std::getenv("KCLIP_DIST_PORT"));
  const std::string out = std::getenv("KCLIP_DIST_OUT");

  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(port);
  store_options.isServer = rank == 0;
  store_options.numWorkers = kWorld;
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
  auto gloo_options = c10d::ProcessGroupGloo::Options::create();
  gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, kWorld, gloo_options);

  auto [img_all, txt_all] = full_batch();
  kclip::TensorDict results;
  for (const auto& config : kConfigs) {
    kclip::ContrastiveLoss loss(kclip::ContrastiveLossOptions()
                                    .process_group(group)
                                    .local_loss(config.local_loss)
                                    .gather_with_grad(config.with_grad));
    loss->to(torch::kDouble);
    auto img = img_all.narrow(0, rank * kLocalBatch, kLocalBatch).clone().requires_grad_();
    auto txt = txt_all.narrow(0, rank * kLocalBatch, kLocalBatch).clone().requires_grad_();
    auto value = loss->forward(img, txt);
    value.backward();
    results.insert(config.key() + ".loss", value.detach());
    results.insert(config.key() + ".img_grad", img.grad());
    results.insert(config.key() + ".txt_grad", txt.grad());
    results.insert(config.key() + ".scale_grad", loss->logit_scale.grad());
  }
  kclip::save_safetensors(out, results);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "distributed worker: %s\n", e.what());
  return 1;
}

}  // namespace kclip::testing

TEST_CASE("losses/distributed: two Gloo processes built in C++ match one process with the whole batch") {
  kclip::testing::TempDir dir;
  const int port = free_port();
  std::vector<pid_t> workers;
  for (int rank = 0; rank < kWorld; ++rank)
    workers.push_back(spawn_worker(rank, port, (dir / ("rank" + std::to_string(rank) + ".safetensors")).string()));
  for (pid_t pid : workers) REQUIRE(wait_for(pid, 120) == 0);
  std::vector<kclip::TensorDict> ranks;
  for (int rank = 0; rank < kWorld; ++rank)
    ranks.push_back(kclip::load_safetensors(dir / ("rank" + std::to_string(rank) + ".safetensors")));

  auto [img, txt] = full_batch();
  img.requires_grad_();
  txt.requires_grad_();
  kclip::ContrastiveLoss single;
  single->to(torch::kDouble);
  auto full = single->forward(img, txt);
  full.backward();

  for (const auto& config : kConfigs) {
    INFO("local_loss=" << config.local_loss << " gather_with_grad=" << config.with_grad);
    const std::string k = config.key();
    auto losses = torch::stack({ranks[0][k + ".loss"], ranks[1][k + ".loss"]});
    if (config.local_loss) {
      check_close(losses.mean(), full.detach());  // local losses average to the full loss
    } else {
      check_close(losses[0], full.detach());  // every rank computes the full loss
      check_close(losses[1], full.detach());
    }
    check_close(torch::stack({ranks[0][k + ".scale_grad"], ranks[1][k + ".scale_grad"]}).mean(),
                single->logit_scale.grad());
    if (config.with_grad || !config.local_loss) {
      const double world_factor = config.with_grad ? kWorld : 1;  // DDP's averaging divides it back
      for (int r = 0; r < kWorld; ++r) {
        check_close(ranks[r][k + ".img_grad"] / world_factor, img.grad().narrow(0, r * kLocalBatch, kLocalBatch));
        check_close(ranks[r][k + ".txt_grad"] / world_factor, txt.grad().narrow(0, r * kLocalBatch, kLocalBatch));
      }
    }
  }
}
