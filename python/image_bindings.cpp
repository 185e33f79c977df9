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
      .def(py::init([](int64_t size, std::array<float, 3> mean, std::array<float, 3> std) {
             return ImageTransform{size, mean, std};
           }),
           arg("size") = 224, arg("mean") = kOpenAIDatasetMean, arg("std") = kOpenAIDatasetStd)
      .def("__call__", &transform_any, arg("images"))
      .def_readwrite("size", &ImageTransform::size)
      .def_readwrite("mean", &ImageTransform::mean)
      .def_readwrite("std", &ImageTransform::std)
      .def(py::pickle([](const ImageTransform& t) { return py::make_tuple(t.size, t.mean, t.std); },
                      [](const py::tuple& state) {
                        return ImageTransform{state[0].cast<int64_t>(), state[1].cast<std::array<float, 3>>(),
                                              state[2].cast<std::array<float, 3>>()};
                      }));
}
