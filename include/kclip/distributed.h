#pragma once
// Gathering features across ranks for the contrastive loss (c10d process groups: Gloo on CPU, NCCL on CUDA).
#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

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

}  // namespace kclip
