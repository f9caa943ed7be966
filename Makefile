# tlmoe — the two commands of the README, and a few helpers.
#   make quickstart   install what is missing, build, run the pipeline on the embedded gym
#   make test         install what is missing, build, run every test (ctest)
#   make study        build, run the study (docs/study.md): every method, several seeds, one results file
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all setup configure build test quickstart study docs clean format

all: build

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DTLMOE_PYTHON="$$(scripts/setup.sh --print)" $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

quickstart: build
	@scripts/quickstart.sh $(BUILD_DIR)/tlmoe

study: build
	@scripts/study.sh $(BUILD_DIR)/tlmoe

# Regenerate docs/config.md from the config declarations (a test checks it is current).
docs: build
	@$(BUILD_DIR)/tlmoe config docs > docs/config.md

format:
	@clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu')

clean:
	@rm -rf $(BUILD_DIR)
