# tlmoe — the two commands of the README, and a few helpers.
#   make quickstart   install what is missing, build, run the pipeline on the embedded gym
#   make test         install what is missing, build (the fuzz targets too), run every test (ctest), replay the
#                     fuzz targets over their committed inputs (fuzz/check.sh)
#   make study        build, run the study (docs/study.md): every method, several seeds, one results file
#   make fuzz         build the libFuzzer targets (clang, build-fuzz) and run each FUZZ_SECONDS (docs/fuzzing.md)
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
# Fuzzing (docs/fuzzing.md): a separate clang build of the readers' sources.
FUZZ_BUILD_DIR ?= build-fuzz
FUZZ_CXX ?= clang++-14
FUZZ_SECONDS ?= 20
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=

.PHONY: all setup configure build test quickstart study docs clean format fuzz-build fuzz fuzz-check

all: build

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DTLMOE_PYTHON="$$(scripts/setup.sh --print)" $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build fuzz-build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)
	@FUZZ_BUILD_DIR=$(abspath $(FUZZ_BUILD_DIR)) fuzz/check.sh

quickstart: build
	@scripts/quickstart.sh $(BUILD_DIR)/tlmoe

study: build
	@scripts/study.sh $(BUILD_DIR)/tlmoe

# Regenerate docs/config.md from the config declarations (a test checks it is current).
docs: build
	@$(BUILD_DIR)/tlmoe config docs > docs/config.md

fuzz-build: setup
	@cmake -S fuzz -B $(FUZZ_BUILD_DIR) -G Ninja -DCMAKE_CXX_COMPILER=$(FUZZ_CXX) \
	  -DTLMOE_PYTHON="$$(scripts/setup.sh --print)" >/dev/null
	@cmake --build $(FUZZ_BUILD_DIR) -j $(JOBS)

# Every target once over its committed seeds and regression inputs (no fuzzing; part of `make test`).
fuzz-check: fuzz-build
	@FUZZ_BUILD_DIR=$(abspath $(FUZZ_BUILD_DIR)) fuzz/check.sh

# Runs every target (or FUZZ_TARGETS) for FUZZ_SECONDS, FUZZ_JOBS at a time; fails on a finding.
fuzz: fuzz-build
	@FUZZ_BUILD_DIR=$(abspath $(FUZZ_BUILD_DIR)) fuzz/run.sh -s $(FUZZ_SECONDS) -j $(FUZZ_JOBS) $(FUZZ_TARGETS)

format:
	@clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu')

clean:
	@rm -rf $(BUILD_DIR)
