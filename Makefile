# duckling build. `make` builds build/duckling and build/libduckling.a; `make test` runs the
# unit and conformance tests (T=suite to run one); `make test-asan` runs them again under
# AddressSanitizer + UndefinedBehaviorSanitizer; `make fuzz` builds libFuzzer targets (clang).
# Sources are found by wildcard: src/<layer>/*.c form the library, src/cli/*.c the program,
# tests/*.c and fuzz/*.c the test runner. ISA-specific kernel files are named *_avx2.c,
# *_avx512.c or *_neon.c and get their instruction-set flags here, nowhere else.

BUILD   ?= build
CC      ?= gcc
OPT     ?= -O2
SAN     ?=
WERROR  ?= -Werror

ARCH := $(shell uname -m)

DUCKDB_DIR := third_party/duckdb
DEPS_STAMP := third_party/.deps-ok

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(WERROR)
CFLAGS  := -std=c11 $(OPT) -g $(WARN) -D_DEFAULT_SOURCE -D_GNU_SOURCE -pthread -Isrc -I$(DUCKDB_DIR)/include \
           -MMD -MP $(EXTRA_CFLAGS)
LDLIBS  := -ljansson -lpcre2-8 -lutf8proc -lmicrohttpd -lcurl -lcrypto -ledit -L$(DUCKDB_DIR)/lib -lduckdb -lm -lpthread
LDFLAGS := -pthread -Wl,-rpath,$(abspath $(DUCKDB_DIR)/lib) $(EXTRA_LDFLAGS)

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRC_ALL := $(wildcard src/*/*.c) $(wildcard src/*/arch/*/*.c)
ifeq ($(ARCH),x86_64)
LIB_SRC_ALL := $(filter-out %_neon.c,$(LIB_SRC_ALL))
else
LIB_SRC_ALL := $(filter-out %_avx2.c %_avx512.c,$(LIB_SRC_ALL))
endif
CLI_SRC  := $(wildcard src/cli/*.c)
LIB_SRC  := $(filter-out $(CLI_SRC),$(LIB_SRC_ALL))
TEST_SRC := $(wildcard tests/*.c) $(wildcard fuzz/*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

LIB  := $(BUILD)/libduckling.a
BIN  := $(BUILD)/duckling
TESTBIN := $(BUILD)/duckling-tests
REGISTRY := $(BUILD)/gen/test_registry.inc

.PHONY: all test test-asan test-node fuzz deps clean bench
all: $(BIN)

deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/deps.sh
	bash scripts/deps.sh
	@touch $@

$(BUILD)/obj/%_avx2.o: ISA_FLAGS := -mavx2 -mfma -mf16c
$(BUILD)/obj/%_avx512.o: ISA_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c

$(BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_FLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

# Every `TEST(suite, name)` line in tests/*.c becomes one X(suite, name) entry.
$(REGISTRY): $(wildcard tests/*.c)
	@mkdir -p $(dir $@)
	@grep -h '^TEST(' $^ | sed -E 's/^TEST\(([A-Za-z0-9_]+), *([A-Za-z0-9_]+)\).*/X(\1, \2)/' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(BUILD)/obj/tests/main.o: $(REGISTRY)
$(BUILD)/obj/tests/%.o: CFLAGS += -I$(BUILD)/gen -Itests
$(BUILD)/obj/fuzz/%.o: CFLAGS += -Itests

$(TESTBIN): $(TEST_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(TEST_OBJ) $(LIB) $(LDLIBS)

test: $(BIN) $(TESTBIN)
	DUCKLING_BIN=$(BIN) $(TESTBIN) $(T)

test-asan:
	$(MAKE) BUILD=build/asan SAN=1 OPT=-O1 test

# Tokenizer cross-check against @lenml/tokenizers and chat templates against @huggingface/jinja
# (node + npm; installs into tests/node/node_modules).
test-node: $(BIN)
	bash tests/node/setup.sh
	DUCKLING_BIN=$(BIN) node --test tests/node/tokenizers.test.mjs tests/node/templates.test.mjs tests/node/server.test.mjs

# libFuzzer targets: fuzz/fuzz_<name>.c each define fuzz_<name>_one(data, size); the
# libFuzzer entry point is added when DK_LIBFUZZER is set.
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
fuzz:
	$(MAKE) BUILD=build/fuzz CC=clang SAN=1 OPT=-O1 EXTRA_CFLAGS="-fsanitize=fuzzer-no-link" build/fuzz/libduckling.a
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  echo "clang $$f -> build/fuzz/$$n"; \
	  clang -std=c11 -O1 -g -DDK_LIBFUZZER -D_GNU_SOURCE -Isrc -Itests -I$(DUCKDB_DIR)/include -fsanitize=fuzzer,address,undefined \
	    $$f build/fuzz/libduckling.a $(LDLIBS) -Wl,-rpath,$(abspath $(DUCKDB_DIR)/lib) -o build/fuzz/$$n || exit 1; done

# Benchmarks (never part of `make test`): build/bandwidth; bench/compare drives duckling bench.
bench: $(BIN) $(BUILD)/bandwidth $(BUILD)/bench-grammar $(BUILD)/bench-batch $(BUILD)/bench-sql $(BUILD)/bench-vectors $(BUILD)/bench-hnsw $(BUILD)/bench-rag
$(BUILD)/bandwidth: bench/bandwidth.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -g $(WARN) -D_GNU_SOURCE -pthread -o $@ $< -pthread
# bench/NAME.c -> build/bench-NAME, linked with the library
$(BUILD)/bench-%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -g $(WARN) -D_DEFAULT_SOURCE -D_GNU_SOURCE -pthread -Isrc -I$(DUCKDB_DIR)/include -o $@ $< $(LIB) $(LDLIBS) $(LDFLAGS)

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
