"""Builds kclip._C with CMake for `pip install --no-build-isolation .` (see README, "Python package").

The extension links the libtorch of the interpreter running pip; only the library and the extension are built
(no tests, no CLI). CMAKE_ARGS in the environment are passed through, e.g. CMAKE_ARGS="-DKCLIP_USE_PCH=OFF".
"""
import os
import pathlib
import shlex
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        package_dir = pathlib.Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = pathlib.Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DKCLIP_PYTHON_PACKAGE_DIR={package_dir}",
            "-DKCLIP_BUILD_TESTS=OFF", "-DKCLIP_BUILD_CLI=OFF",
        ] + shlex.split(os.environ.get("CMAKE_ARGS", ""))
        subprocess.run(configure, check=True)
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "kclip_python", "-j", jobs], check=True)


setup(
    ext_modules=[CMakeExtension("kclip._C")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": "build-pip"}},  # keep clear of CMake's build/ used by `make`
)
