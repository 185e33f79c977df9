"""Shared fixtures: the kclip package from the build tree, the reference data folder, the CLI binary."""
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("KCLIP_BUILD_DIR", ROOT / "build"))
if (BUILD / "python" / "kclip").is_dir() and str(BUILD / "python") not in sys.path:
    sys.path.insert(0, str(BUILD / "python"))  # lets plain `pytest tests/python` work after `make build`


def shared_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("KCLIP_SHARED") or ROOT.parent / "shared")


@pytest.fixture(scope="session")
def shared():
    """Returns a function mapping a path inside ../shared to its location; skips (or fails under
    KCLIP_REQUIRE_SHARED=1) when the file is absent."""

    def locate(relative: str) -> pathlib.Path:
        path = shared_dir() / relative
        if not path.exists():
            message = f"reference data not found: {path}"
            if os.environ.get("KCLIP_REQUIRE_SHARED") == "1":
                pytest.fail(message + " (KCLIP_REQUIRE_SHARED=1)")
            pytest.skip(message)
        return path

    return locate


@pytest.fixture(scope="session")
def kclip_cli() -> pathlib.Path:
    path = BUILD / "kclip"
    if not path.exists():
        pytest.fail(f"{path} not built: run `make build`")
    return path
