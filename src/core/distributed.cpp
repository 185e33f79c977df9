#include <kclip/distributed.h>
#include <kclip/error.h>

#include <ATen/ATen.h>

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

}  // namespace kclip
