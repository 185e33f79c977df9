// Image decoding and CLIP preprocessing against the reference pixels of OpenAI's pipeline
// (../shared/golden/clip-tiny/expected.safetensors) and their error handling.
#include "testing.h"

#include <kclip/clip.h>
#include <kclip/error.h>
#include <kclip/image_transform.h>
#include <kclip/safetensors.h>

#include <torch/torch.h>

#include <fstream>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;

namespace {

std::vector<std::filesystem::path> golden_images() {
  std::vector<std::filesystem::path> paths;
  for (const char* name : {"china.jpg", "flower.jpg", "fmnist_test_0_label9.png", "fmnist_test_1_label2.png"})
    paths.push_back(shared_dir() / "golden/clip-tiny" / name);
  return paths;
}

void write_prefix(const std::filesystem::path& from, const std::filesystem::path& to, size_t bytes) {
  std::ifstream in(from, std::ios::binary);
  std::string data(bytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(bytes));
  std::ofstream(to, std::ios::binary) << data;
}

}  // namespace

TEST_CASE("image transform: the four reference images preprocess like OpenAI's pipeline") {
  if (!have_shared("golden/clip-tiny/expected.safetensors")) return;
  auto expected = kclip::load_safetensors(shared_dir() / "golden/clip-tiny/expected.safetensors");
  const auto paths = golden_images();
  const torch::Tensor pixels_224 = kclip::ImageTransform{224}(paths);
  CHECK(pixels_224.sizes() == torch::IntArrayRef({4, 3, 224, 224}));
  const torch::Tensor error_224 = (pixels_224 - expected["pixel_values_224"]).abs().mean({1, 2, 3});
  const torch::Tensor pixels_64 = kclip::ImageTransform{64}(paths);
  const torch::Tensor error_64 = (pixels_64 - expected["pixel_values"]).abs().mean({1, 2, 3});
  for (int64_t i = 0; i < 4; ++i) {
    INFO("image ", paths[i].filename().string());
    CHECK(error_224[i].item<double>() <= 0.01);
    CHECK(error_64[i].item<double>() <= 0.01);
  }
  // The greyscale PNGs decode losslessly: equal up to float rounding.
  CHECK(error_224[2].item<double>() < 1e-6);
  // Decoded tensors give the same batch as the files.
  std::vector<torch::Tensor> images;
  for (const auto& p : paths) images.push_back(kclip::read_image(p));
  CHECK(images[0].sizes() == torch::IntArrayRef({3, 427, 640}));
  CHECK(torch::equal(kclip::ImageTransform{224}(images), pixels_224));
  CHECK(torch::equal(kclip::ImageTransform{224}(images[1]), pixels_224[1]));
  // And the model sees what it saw in OpenAI's pipeline.
  if (!have_shared("golden/clip-tiny/model.safetensors")) return;
  torch::NoGradGuard no_grad;
  kclip::CLIP model(kclip::CLIPImpl::load(shared_dir() / "golden/clip-tiny/model.safetensors"));
  CHECK((model->encode_image(pixels_64) - expected["image_features"]).abs().max().item<double>() < 5e-3);  // 1.2e-3 measured
}

TEST_CASE("image transform: resize keeps constant images constant, same size is the identity") {
  const torch::Tensor grey = torch::full({1, 37, 53}, 200, torch::kByte);
  CHECK(torch::equal(kclip::resize_bicubic(grey, 11, 90), torch::full({1, 11, 90}, 200, torch::kByte)));
  const torch::Tensor noise = torch::randint(0, 256, {3, 20, 30}, torch::kByte);
  CHECK(torch::equal(kclip::resize_bicubic(noise, 20, 30), noise));
  CHECK(kclip::resize_bicubic(noise.select(0, 0), 5, 6).sizes() == torch::IntArrayRef({5, 6}));
  // The crop is centred on the longer side: a wide image's left and right edges are cut equally.
  const torch::Tensor wide = torch::zeros({3, 10, 30}, torch::kByte).index_put_({torch::indexing::Slice(), torch::indexing::Slice(),
                                                                                  torch::indexing::Slice(10, 20)}, 255);
  const torch::Tensor out = kclip::ImageTransform{10}(wide);
  CHECK(out.sizes() == torch::IntArrayRef({3, 10, 10}));
  CHECK(torch::allclose(out, out.flip({2})));
}

TEST_CASE("image transform: bad files and tensors are one error naming them") {
  kclip::testing::TempDir dir;
  CHECK_THROWS_WITH_AS(kclip::read_image(dir / "missing.jpg"), doctest::Contains("missing.jpg: cannot open"), kclip::Error);
  std::ofstream(dir / "empty.png").close();
  CHECK_THROWS_WITH_AS(kclip::read_image(dir / "empty.png"), doctest::Contains("empty.png: empty file"), kclip::Error);
  std::ofstream(dir / "text.jpg") << "not an image";
  CHECK_THROWS_WITH_AS(kclip::read_image(dir / "text.jpg"), doctest::Contains("text.jpg: cannot decode image"), kclip::Error);
  CHECK_THROWS_WITH_AS(kclip::ImageTransform{32}(std::vector<std::filesystem::path>{dir / "text.jpg"}),
                       doctest::Contains("text.jpg"), kclip::Error);
  CHECK_THROWS_AS(kclip::ImageTransform{32}(torch::zeros({3, 8, 8}, torch::kFloat)), kclip::ValueError);
  CHECK_THROWS_AS(kclip::ImageTransform{32}(torch::zeros({5, 8, 8}, torch::kByte)), kclip::ValueError);  // 4 = RGBA
  CHECK_THROWS_AS(kclip::ImageTransform{0}(torch::zeros({3, 8, 8}, torch::kByte)), kclip::ValueError);
  if (!have_shared("golden/clip-tiny/china.jpg")) return;
  write_prefix(shared_dir() / "golden/clip-tiny/china.jpg", dir / "cut.jpg", 20000);
  CHECK_THROWS_WITH_AS(kclip::read_image(dir / "cut.jpg"), doctest::Contains("cut.jpg: truncated JPEG"), kclip::Error);
  write_prefix(shared_dir() / "golden/clip-tiny/fmnist_test_0_label9.png", dir / "cut.png", 300);
  CHECK_THROWS_WITH_AS(kclip::read_image(dir / "cut.png"), doctest::Contains("cut.png: truncated PNG: chunk IDAT"), kclip::Error);
}
