#!/usr/bin/env bats
# fuzz.bats - the libFuzzer harnesses (tests/fuzz/) build, and every seed in
# tests/fuzz/corpus/ passes its harness's invariants: one quick run each.
# Fuzzing for real is `make fuzz` (tests/fuzz/run.sh SECONDS).

@test "fuzz harnesses build and replay their seed corpora cleanly" {
	local clang=${CLANG:-clang} rt
	command -v "$clang" >/dev/null ||
		skip "$clang is not installed (apt-get install clang libclang-rt-14-dev)"
	rt=$("$clang" -print-resource-dir)/lib/linux/libclang_rt.fuzzer-$(uname -m).a
	[ -e "$rt" ] || skip "no libFuzzer runtime at $rt (apt-get install libclang-rt-14-dev)"
	run "$BATS_TEST_DIRNAME/fuzz/run.sh" replay
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(grep -c ': [0-9]* seeds ok$' <<<"$output")" -eq 4 ]
}
