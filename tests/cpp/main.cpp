// doctest's main, plus a worker mode: with KCLIP_DIST_RANK set, this binary is one rank of the distributed
// loss test (test_losses_distributed.cpp), which launches it that way.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>

namespace kclip::testing {
int distributed_worker_main();
}

int main(int argc, char** argv) {
  if (std::getenv("KCLIP_DIST_RANK") != nullptr) return kclip::testing::distributed_worker_main();
  doctest::Context context(argc, argv);
  return context.run();
}
