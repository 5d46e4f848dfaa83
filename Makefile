# bulwark — plain Makefile. `make` builds ./bulwark; `make test` installs what is
# missing, builds, and runs the unit and integration suites.

CC       ?= gcc
BUILD    ?= build
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CPPFLAGS := -D_GNU_SOURCE -Isrc
LDLIBS   := -lyaml -lhiredis -lpthread -lm
PYTEST   := /usr/bin/python3 -m pytest
BIN      ?= bulwark

SRC      := $(sort $(wildcard src/*/*.c))
OBJ      := $(SRC:src/%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps test unit integration asan fuzz run bench soak clean format valgrind
all: $(BIN)

deps:
	@scripts/deps.sh build test

$(BIN): $(BUILD)/obj/main.o $(OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(OBJ) $(LDLIBS) -lcmocka

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: $(BIN)
	BULWARK_BIN=$(abspath $(BIN)) $(PYTEST) -q -x tests/integration

test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) integration

# ASan + UBSan build of the binary and unit tests, then the same suites.
asan:
	@scripts/deps.sh build test asan
	$(MAKE) CC=clang BUILD=build-asan BIN=build-asan/bulwark \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" build-asan/bulwark unit integration

valgrind: $(UNIT_BIN)
	@scripts/deps.sh valgrind
	@set -e; for t in $(UNIT_BIN); do echo "== valgrind $$t"; \
	  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite $$t; done

FUZZ_SECONDS ?= 30
fuzz:
	@scripts/deps.sh build fuzz
	@fuzz/run.sh $(FUZZ_SECONDS)

run: deps
	$(MAKE) all
	@scripts/demo.sh

bench: all
	@scripts/deps.sh bench
	bench/run.sh

SOAK_SECONDS ?= 600
soak: all
	SOAK_SECONDS=$(SOAK_SECONDS) BULWARK_BIN=$(abspath $(BIN)) /usr/bin/python3 tests/soak/soak.py

format:
	clang-format -i src/*.c src/*/*.[ch] tests/unit/*.c fuzz/*.c

clean:
	rm -rf build build-asan build-fuzz bulwark

-include $(OBJ:.o=.d) $(BUILD)/obj/main.d
