// A webdataset tar shard (libarchive underneath): every sample is read and its image decoded.
#include "fuzz.h"

#include "data/tar_reader.h"

#include <kclip/data.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = kclip_fuzz::write("shard-000000.tar", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    kclip::detail::TarSampleReader reader(path.string(), kclip::WebDatasetOptions{});
    for (int i = 0; i < 64; ++i)
      if (!reader.next()) break;
  });
  return 0;
}
