// kclip._C images: decoding, Pillow's bicubic resize, OpenAI CLIP's preprocessing (ImageTransform).
#include <kclip/image_transform.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>
#include <torch/extension.h>

namespace py = pybind11;

namespace {

bool is_path(const py::handle& obj) {
  return py::isinstance<py::str>(obj) || py::hasattr(obj, "__fspath__");
}

// One path or uint8 tensor -> [3, S, S]; a [N, C, H, W] tensor or a list of paths / tensors -> [N, 3, S, S].
at::Tensor transform_any(const kclip::ImageTransform& t, const py::object& images) {
  if (is_path(images)) {
    const auto path = images.cast<std::filesystem::path>();
    py::gil_scoped_release release;
    return t(std::vector<std::filesystem::path>{path})[0];
  }
  if (THPVariable_Check(images.ptr())) {
    const at::Tensor image = images.cast<at::Tensor>();
    py::gil_scoped_release release;
    if (image.dim() == 4) return t(std::vector<at::Tensor>(image.unbind(0)));
    return t(image);
  }
  const auto items = images.cast<py::sequence>();
  if (items.size() > 0 && is_path(items[0])) {
    const auto paths = images.cast<std::vector<std::filesystem::path>>();
    py::gil_scoped_release release;
    return t(paths);
  }
  const auto tensors = images.cast<std::vector<at::Tensor>>();
  py::gil_scoped_release release;
  return t(tensors);
}

}  // namespace

void bind_image(py::module_& m) {
  using namespace kclip;
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();

  m.def("read_image", &read_image, arg("path"), no_gil);
  m.def(
      "decode_image",
      [](const py::bytes& data, const std::string& name) {
        const std::string_view view = data;
        py::gil_scoped_release release;
        return decode_image(view.data(), view.size(), name);
      },
      arg("data"), arg("name") = "<bytes>");
  m.def("resize_bicubic", &resize_bicubic, arg("image"), arg("height"), arg("width"), no_gil);
  m.attr("OPENAI_DATASET_MEAN") = py::make_tuple(kOpenAIDatasetMean[0], kOpenAIDatasetMean[1], kOpenAIDatasetMean[2]);
  m.attr("OPENAI_DATASET_STD") = py::make_tuple(kOpenAIDatasetStd[0], kOpenAIDatasetStd[1], kOpenAIDatasetStd[2]);

  py::class_<ImageTransform>(m, "ImageTransform")
      .def(py::init([](int64_t size, std::array<float, 3> mean, std::array<float, 3> std, bool random_resized_crop,
                       std::array<double, 2> crop_scale, std::array<double, 2> crop_ratio) {
             return ImageTransform{size, mean, std, random_resized_crop, crop_scale, crop_ratio};
           }),
           arg("size") = 224, arg("mean") = kOpenAIDatasetMean, arg("std") = kOpenAIDatasetStd,
           arg("random_resized_crop") = false, arg("crop_scale") = std::array<double, 2>{0.9, 1.0},
           arg("crop_ratio") = std::array<double, 2>{3.0 / 4.0, 4.0 / 3.0})
      .def("__call__", &transform_any, arg("images"))
      .def(
          "apply",
          [](const ImageTransform& t, const at::Tensor& image, uint64_t seed) {
            py::gil_scoped_release release;
            return t(image, seed);
          },
          arg("image"), arg("seed"), "One uint8 image; with random_resized_crop, `seed` draws the crop.")
      .def_readwrite("size", &ImageTransform::size)
      .def_readwrite("mean", &ImageTransform::mean)
      .def_readwrite("std", &ImageTransform::std)
      .def_readwrite("random_resized_crop", &ImageTransform::random_resized_crop)
      .def_readwrite("crop_scale", &ImageTransform::crop_scale)
      .def_readwrite("crop_ratio", &ImageTransform::crop_ratio)
      .def(py::pickle(
          [](const ImageTransform& t) {
            return py::make_tuple(t.size, t.mean, t.std, t.random_resized_crop, t.crop_scale, t.crop_ratio);
          },
          [](const py::tuple& state) {
            ImageTransform t{state[0].cast<int64_t>(), state[1].cast<std::array<float, 3>>(),
                             state[2].cast<std::array<float, 3>>()};
            if (state.size() >= 6) {
              t.random_resized_crop = state[3].cast<bool>();
              t.crop_scale = state[4].cast<std::array<double, 2>>();
              t.crop_ratio = state[5].cast<std::array<double, 2>>();
            }
            return t;
          }));
}
