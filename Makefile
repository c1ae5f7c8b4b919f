# cairn - one binary, every block of the stack.
#
#   make            build build/cairn
#   make up         install missing packages, build, run the default stack
#   make test       install missing packages, build, run every test
#   make unit       C unit tests (plain, then ASan+UBSan)
#   make integration  pytest suites against real processes
#   make fuzz       each libFuzzer harness briefly over its corpus
#
# Options: V=1 (echo commands), SANITIZE=1 (build cairn with ASan+UBSan).

CC       ?= cc
CLANG    ?= clang
PYTHON   ?= /usr/bin/python3
FUZZ_SECONDS ?= 5

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-missing-field-initializers
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -D_GNU_SOURCE -pthread -Isrc
LDLIBS   := -lcrypt -lyaml -lssl -lcrypto -lnghttp2 -lresolv -lz -lbrotlienc -lsnappy -lpcre2-8 -ljansson -lmaxminddb -lsqlite3 -lexpat -lzstd -lpthread -lm
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

ifeq ($(SANITIZE),1)
CFLAGS   += $(SAN)
LDFLAGS  += $(SAN)
endif

ifneq ($(V),1)
Q := @
endif

CORE_SRC := $(sort $(wildcard src/core/*.c))
ROLE_SRC := $(sort $(wildcard src/demo_app/*.c src/dns/*.c src/edge/*.c src/metrics/*.c src/alerts/*.c src/s3/*.c src/registry/*.c src/logs/*.c src/logagent/*.c src/traces/*.c src/backup/*.c src/ui/*.c))
MAIN_SRC := src/cairn.c src/default_stack.c src/deploy_k8s.c
UNIT_SRC := $(sort $(wildcard tests/unit/*.c))

CORE_OBJ := $(patsubst src/%.c,build/obj/%.o,$(CORE_SRC))
ROLE_OBJ := $(patsubst src/%.c,build/obj/%.o,$(ROLE_SRC)) build/obj/gen/ui_assets.o
LIB_OBJ  := $(CORE_OBJ) $(ROLE_OBJ)
MAIN_OBJ := $(patsubst src/%.c,build/obj/%.o,$(MAIN_SRC))
UNIT_OBJ := $(patsubst tests/%.c,build/obj/tests/%.o,$(UNIT_SRC))
ASAN_LIB := $(patsubst src/%.c,build/asan/%.o,$(CORE_SRC) $(ROLE_SRC)) build/asan/gen/ui_assets.o
ASAN_UNIT:= $(patsubst tests/%.c,build/asan/tests/%.o,$(UNIT_SRC))
ASAN_MAIN:= $(patsubst src/%.c,build/asan/%.o,$(MAIN_SRC))

.PHONY: bench-ui bench-logs bench-traces bench-backup image bench-s3 bench-registry conformance-cache bench-edge bench-cdn bench-dns bench-metrics bench-promql bench-alerts all deps up test unit unit-plain unit-asan integration integration-asan fuzz clean bench

all: build/cairn build/core-links

deps:
	$(Q)sh scripts/deps.sh

build/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

# The console's files (src/ui/web, src/ui/dashboards, uPlot from npm pinned by the
# lockfile) embedded into the binary, gzipped, under content-hashed names.
UI_WEB := $(sort $(wildcard src/ui/web/*.html src/ui/web/*.js src/ui/web/*.css src/ui/web/*.svg src/ui/dashboards/*.json))
UI_NPM := src/ui/web/node_modules/.installed
UPLOT  := src/ui/web/node_modules/uplot/dist/uPlot.iife.min.js src/ui/web/node_modules/uplot/dist/uPlot.min.css
$(UI_NPM): src/ui/web/package-lock.json
	cd src/ui/web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@
build/gen/ui_assets.c: scripts/embed_ui.py $(UI_WEB) $(UI_NPM)
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  EMBED   $@"
	$(Q)$(PYTHON) scripts/embed_ui.py $@ src/ui/web src/ui/dashboards $(UPLOT)
build/obj/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<
build/asan/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $(SAN) -c -o $@ $<
build/fuzz/obj/gen/%.o: build/gen/%.c
	@mkdir -p $(dir $@)
	$(Q)$(CLANG) $(FUZZ_BASE) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<

build/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -Itests/unit -MMD -MP -c -o $@ $<

build/asan/%.o: src/%.c
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC[san] $<"
	$(Q)$(CC) $(CFLAGS) $(SAN) -MMD -MP -c -o $@ $<

build/asan/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC[san] $<"
	$(Q)$(CC) $(CFLAGS) $(SAN) -Itests/unit -MMD -MP -c -o $@ $<

build/libcairn.a: $(LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

# src/core/ is a library of its own that knows no role: every one of its objects
# linked alone, with nothing of src/<role>/, must leave no symbol undefined.
build/libcairn-core.a: $(CORE_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

build/core-links: tests/core_links.c build/libcairn-core.a
	@[ "$(V)" = 1 ] || echo "  LD      $@ (core alone)"
	$(Q)$(CC) $(CFLAGS) -o $@ $< -Wl,--whole-archive build/libcairn-core.a -Wl,--no-whole-archive $(LDLIBS)

build/cairn: $(MAIN_OBJ) build/libcairn.a
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

build/unit: $(UNIT_OBJ) build/libcairn.a
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

build/unit-asan: $(ASAN_UNIT) $(ASAN_LIB)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

build/asan/cairn: $(ASAN_MAIN) $(ASAN_LIB)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

up: deps build/cairn
	./build/cairn up

unit-plain: build/unit
	./build/unit
unit-asan: build/unit-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/unit-asan
unit: unit-plain unit-asan

# npm clients the suites drive (winston-loki), pinned by the lockfile
NODE_CLIENTS := tests/integration/node/node_modules/.installed
$(NODE_CLIENTS): tests/integration/node/package-lock.json
	cd tests/integration/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

integration: build/cairn $(NODE_CLIENTS)
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# The same suite against cairn built with ASan+UBSan: a leak or UB in a daemon makes
# its exit code non-zero, which the tests assert on.
integration-asan: build/asan/cairn $(NODE_CLIENTS)
	CAIRN_BIN=$(CURDIR)/build/asan/cairn ASAN_OPTIONS=detect_leaks=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# ---- fuzzing: clang + libFuzzer, each harness briefly over its seed corpus ----
# The library is compiled once with coverage instrumentation (fuzzer-no-link) and
# linked into every harness.
FUZZ_BASE  := -g -O1 -std=gnu11 -D_GNU_SOURCE -pthread -Isrc -fno-sanitize-recover=undefined
FUZZ_FLAGS := $(FUZZ_BASE) -fsanitize=fuzzer,address,undefined
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_NAMES))
FUZZ_OBJ   := $(patsubst src/%.c,build/fuzz/obj/%.o,$(CORE_SRC) $(ROLE_SRC)) build/fuzz/obj/gen/ui_assets.o

build/fuzz/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC[fuzz] $<"
	$(Q)$(CLANG) $(FUZZ_BASE) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c -o $@ $<

build/fuzz/libcairn.a: $(FUZZ_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c build/fuzz/libcairn.a
	@mkdir -p $(dir $@)
	@echo "  FUZZ-LD $@"
	$(Q)$(CLANG) $(FUZZ_FLAGS) -o $@ $< build/fuzz/libcairn.a $(LDLIBS)

fuzz: $(FUZZ_BINS)
	@for n in $(FUZZ_NAMES); do \
	    mkdir -p build/fuzz/corpus-$$n && \
	    printf 'fuzz %-8s %ss ... ' $$n $(FUZZ_SECONDS) && \
	    if ./build/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	        -print_final_stats=1 -close_fd_mask=3 \
	        build/fuzz/corpus-$$n tests/fuzz/corpus/$$n >build/fuzz/$$n.log 2>&1; then \
	        grep -h 'stat::number_of_executed_units' build/fuzz/$$n.log | awk '{print $$2 " runs, ok"}'; \
	    else \
	        echo FAILED; tail -60 build/fuzz/$$n.log; exit 1; \
	    fi; \
	done

test: deps all unit integration integration-asan fuzz
	@echo "all tests passed"

conformance-cache: build/cairn
	bash tests/conformance/cache-tests.sh

bench: bench-edge bench-cdn bench-dns bench-metrics bench-promql bench-alerts bench-s3 bench-registry bench-logs bench-traces bench-backup bench-ui

bench-cdn: build/cairn
	bash bench/cdn.sh

bench-edge: build/cairn
	bash bench/edge.sh

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

bench-dns: build/cairn
	bash bench/dns.sh

bench-metrics: build/cairn
	bash bench/metrics.sh

bench-promql: build/cairn
	bash bench/promql.sh

bench-alerts: build/cairn
	bash bench/alerts.sh

bench-s3: build/cairn
	bash bench/s3.sh

bench-registry: build/cairn
	bash bench/registry.sh

bench-logs: build/cairn
	$(PYTHON) bench/logs.py

# The OCI image layout of build/cairn: build/image (see scripts/mkimage.py).
image: build/cairn
	$(Q)rm -rf build/image
	$(Q)SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) /usr/bin/python3 scripts/mkimage.py \
	    build/cairn build/image $$(./build/cairn version | cut -d' ' -f2) \
	    $$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	    $$(git config --get remote.origin.url 2>/dev/null || echo unknown)
bench-traces: build/cairn
	$(PYTHON) bench/traces.py

bench-backup: build/cairn
	$(PYTHON) bench/backup.py

bench-ui: build/cairn $(NODE_CLIENTS)
	$(PYTHON) bench/ui.py
