#pragma once
// c10d process groups (Gloo on CPU, NCCL on CUDA): set-up from torchrun's environment, gathering features across
// ranks for the contrastive loss, and the collectives the trainer needs.
#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kclip {

using ProcessGroupPtr = c10::intrusive_ptr<c10d::ProcessGroup>;

// Concatenates (along dim 0) every rank's `x`; all ranks must pass the same shape. With no group or one rank
// it returns `x`.
//  - with_grad = false (open_clip's default): the other ranks' rows are constants; gradients reach this rank's
//    rows only, through the local tensor placed at its own slice.
//  - with_grad = true (open_clip's gather_with_grad, torch.distributed.nn.all_gather): backward sums the
//    gathered gradient over ranks, so each rank's `x` receives the gradient of every rank's loss.
at::Tensor all_gather(const at::Tensor& x, const ProcessGroupPtr& group, bool with_grad);

int rank_of(const ProcessGroupPtr& group);        // 0 without a group
int world_size_of(const ProcessGroupPtr& group);  // 1 without a group

// The group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; with
// TORCHELASTIC_USE_AGENT_STORE=True the agent's store is joined, as torch.distributed's env:// does), or null when
// WORLD_SIZE is unset or 1. backend "gloo" (CPU tensors) or "nccl" (CUDA; needs a LibTorch built with NCCL).
// Every collective fails after `timeout_seconds` without its peers (a dead rank), instead of waiting forever.
// Gloo uses the interface GLOO_SOCKET_IFNAME names, else the address MASTER_ADDR resolves to when it is local.
ProcessGroupPtr init_process_group_from_env(const std::string& backend = "gloo", double timeout_seconds = 1800);

// In place over `tensors` (any device the group handles): sum, or mean (sum / world size) in chunks of at most
// bucket_bytes issued together, then waited for.
void all_reduce_mean_(const std::vector<at::Tensor>& tensors, const ProcessGroupPtr& group,
                      int64_t bucket_bytes = 25 << 20);
void broadcast_(const std::vector<at::Tensor>& tensors, const ProcessGroupPtr& group, int root = 0);
// Every rank's int64 values (each rank passes the same count): [world_size][count].
std::vector<std::vector<int64_t>> all_gather_ints(const std::vector<int64_t>& values, const ProcessGroupPtr& group);
// min / max over ranks of each value.
std::vector<int64_t> all_reduce_min(const std::vector<int64_t>& values, const ProcessGroupPtr& group);
std::vector<int64_t> all_reduce_max(const std::vector<int64_t>& values, const ProcessGroupPtr& group);

}  // namespace kclip
