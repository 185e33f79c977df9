// Caption files: CSV with a header (quoted fields, separators, ragged rows), as CsvDataset reads them, both
// with bad rows skipped (counted) and as errors.
#include "fuzz.h"

#include <kclip/data.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = kclip_fuzz::write("captions.csv", data, size);
  for (const char* bad_rows : {"skip", "error"})
    KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
      kclip::CsvDataset dataset(path, kclip::CsvDatasetOptions().img_key("image").caption_key("caption").bad_rows(bad_rows));
      (void)dataset.captions();
      (void)dataset.describe();
    });
  return 0;
}
