# kclip's entry points. `make test` and `make demo` install missing Debian packages themselves, configure,
# build and run. Variables: BUILD (build dir), JOBS (parallel compile jobs), PYTHON (must import torch).
BUILD  ?= build
JOBS   ?= $(shell nproc)
PYTHON ?= /usr/bin/python3
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

export PYTHONPATH := $(CURDIR)/$(BUILD)/python$(if $(PYTHONPATH),:$(PYTHONPATH))

# make fuzz: the libFuzzer harnesses (tests/fuzz/) for FUZZ_SECONDS each (0: replay the corpus once).
FUZZ_SECONDS ?= 60

.PHONY: all deps configure build test test-cpp test-python demo walkthrough bench fuzz test-sanitize test-tsan clean

all: build

deps:
	@scripts/install-deps.sh
	@scripts/fetch-assets.sh || echo "warning: CLIP's BPE vocabulary not fetched; pass ClipTokenizer a path" >&2

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) -DPython_EXECUTABLE=$(PYTHON)

configure: $(BUILD)/CMakeCache.txt

build: deps configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	@$(MAKE) --no-print-directory test-cpp test-python

test-cpp:
	cd $(BUILD) && ctest --output-on-failure -j 1

test-python:
	$(PYTHON) -m pytest tests/python -q -rs

demo: build
	scripts/demo.sh $(BUILD)

walkthrough: build
	scripts/walkthrough.sh $(BUILD)

bench: build
	scripts/bench.sh $(BUILD)

fuzz: deps
	scripts/fuzz.sh $(BUILD)-fuzz $(FUZZ_SECONDS)

test-sanitize: deps
	scripts/test-sanitize.sh $(BUILD)-sanitize

test-tsan: deps
	scripts/test-tsan.sh $(BUILD)-tsan

clean:
	rm -rf $(BUILD) $(BUILD)-fuzz $(BUILD)-sanitize
