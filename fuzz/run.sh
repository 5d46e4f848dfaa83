#!/usr/bin/env bash
# Build every fuzz/fuzz_*.c harness with libFuzzer + ASan + UBSan and run each
# for SECONDS on its corpus.
#
#   fuzz/run.sh SECONDS
#
# fuzz/fuzz_NAME.c uses the seeds in fuzz/corpus/NAME/ (and the dictionary
# fuzz/NAME.dict if there is one). Seeds are copied into build-fuzz/corpus/NAME/,
# which keeps what the fuzzer finds between runs, so the checked-in seeds are
# never written to. Crash inputs land in build-fuzz/artifacts/.
#
# Exit status: 0 all harnesses ran clean; 1 a harness crashed or failed a
# check; 2 usage, or something did not build (a src file that does not compile
# is reported and left out; a harness that cannot be built is a failure).
set -u

if [ $# -ne 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh SECONDS" >&2
    exit 2
fi
seconds=$1
cd "$(dirname "$0")/.." || exit 2

CC=${FUZZ_CC:-clang}
out=build-fuzz
cflags=(-std=c11 -D_GNU_SOURCE -Isrc -g -O1 -fno-omit-frame-pointer)
# UBSan reports must stop the run, not scroll past.
san=(-fno-sanitize-recover=all)
mkdir -p "$out/obj" "$out/corpus" "$out/artifacts"

status=0

# The modules under test, built once with coverage instrumentation into an
# archive: each harness pulls in only the objects it needs, so a module that
# is half-written elsewhere cannot break the others' harnesses.
objs=()
for src in src/*/*.c; do
    [ "$src" = src/main.c ] && continue
    obj="$out/obj/$(echo "${src#src/}" | tr / _ | sed 's/\.c$/.o/')"
    if ! "$CC" "${cflags[@]}" -fsanitize=fuzzer-no-link,address,undefined "${san[@]}" \
        -c -o "$obj" "$src" 2>"$obj.log"; then
        echo "fuzz: $src does not compile in fuzz mode (left out):" >&2
        sed 's/^/    /' "$obj.log" | head -20 >&2
        rm -f "$obj"
        [ $status -eq 0 ] && status=2
        continue
    fi
    objs+=("$obj")
done
lib="$out/libbulwark-fuzz.a"
rm -f "$lib"
if [ ${#objs[@]} -gt 0 ]; then
    ar rcs "$lib" "${objs[@]}" || exit 2
fi

for harness in fuzz/fuzz_*.c; do
    [ -e "$harness" ] || continue
    name=$(basename "$harness" .c)
    name=${name#fuzz_}
    bin="$out/fuzz_$name"
    if ! "$CC" "${cflags[@]}" -fsanitize=fuzzer,address,undefined "${san[@]}" \
        -o "$bin" "$harness" ${objs[@]:+"$lib"} -lyaml -lhiredis -lpthread 2>"$bin.build.log"; then
        echo "fuzz_$name: BUILD FAILED" >&2
        sed 's/^/    /' "$bin.build.log" | head -20 >&2
        [ $status -eq 0 ] && status=2
        continue
    fi

    corpus="$out/corpus/$name"
    mkdir -p "$corpus"
    if [ -d "fuzz/corpus/$name" ]; then
        cp -R "fuzz/corpus/$name/." "$corpus/"
    else
        echo "fuzz_$name: no seeds in fuzz/corpus/$name/, starting empty" >&2
    fi
    dict=()
    [ -f "fuzz/$name.dict" ] && dict=(-dict="fuzz/$name.dict")

    log="$out/fuzz_$name.log"
    "./$bin" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/${name}-" "${dict[@]}" \
        >"$log" 2>&1
    rc=$?
    done_line=$(grep -a -E '^#[0-9]+[[:space:]]+DONE ' "$log" | tail -n 1)
    execs=$(grep -a -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}')
    if [ $rc -eq 0 ]; then
        echo "fuzz_$name: ${execs:-?} executions; ${done_line:-no DONE line}"
    else
        echo "fuzz_$name: CRASHED (exit $rc); log: $log" >&2
        grep -a -E 'ERROR: |SUMMARY: |runtime error|Test unit written to' "$log" | head -10 >&2
        status=1
    fi
done

exit $status
