#!/usr/bin/env bash
# run.sh - build the libFuzzer harnesses and fuzz each for a while
#
#   tests/fuzz/run.sh [SECONDS]     build, then fuzz each harness SECONDS
#                                   (default 60) on a copy of its seed corpus
#   tests/fuzz/run.sh build         only build, into tests/fuzz/out/
#   tests/fuzz/run.sh replay        build, then run every seed once
#
# Environment: CLANG (default clang), FUZZ_HARNESSES (a subset, by name),
# FUZZ_SKIP (checks to leave out, see the harness comments), FUZZ_ARGS
# (more libFuzzer flags). A crash leaves its input in tests/fuzz/out/ as
# <harness>-crash-<sha1>; replay it with: tests/fuzz/out/<harness> FILE
# Exit status: 0 when every harness ran clean, 1 otherwise.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$HERE/out
CLANG=${CLANG:-clang}
HARNESSES=${FUZZ_HARNESSES:-fuzz_data fuzz_reply fuzz_addr fuzz_line}
SRCS="clamsmtpd.c net.c smtp.c clamd.c spool.c"
FLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
OBJ_FLAGS="-g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
WARN="-std=c11 -Wall -Wextra"
HWARN="$WARN -Werror"           # the harnesses; the program's own -Werror is for cc

die() { echo "run.sh: $*" >&2; exit 1; }

# newer TARGET FILE... - true when TARGET is missing or older than a FILE
newer() {
	local t=$1 f
	shift
	[ -e "$t" ] || return 0
	for f in "$@"; do [ "$f" -nt "$t" ] && return 0; done
	return 1
}

build() {
	command -v "$CLANG" >/dev/null || die "$CLANG not found (apt-get install clang libclang-rt-14-dev)"
	mkdir -p "$OUT/obj" || die "cannot create $OUT"
	local s o objs="" h extra tmp
	for s in $SRCS; do
		o=$OUT/obj/${s%.c}.o
		objs="$objs $o"
		newer "$o" "$ROOT/$s" "$ROOT/clamsmtpd.h" "$0" || continue
		# main is libFuzzer's: the program's own main is renamed.
		extra=
		[ "$s" = clamsmtpd.c ] && extra=-Dmain=clamsmtpd_main
		$CLANG $WARN $OBJ_FLAGS $extra -c "$ROOT/$s" -o "$o.$$" && mv "$o.$$" "$o" ||
			{ rm -f "$o.$$"; die "cannot compile $s"; }
	done
	for h in $HARNESSES; do
		[ -f "$HERE/$h.c" ] || die "no harness $h"
		newer "$OUT/$h" "$HERE/$h.c" "$ROOT/clamsmtpd.h" "$0" $objs || continue
		extra=
		[ "$h" = fuzz_line ] && extra=-Wl,--wrap=read     # short reads, see fuzz_line.c
		tmp=$OUT/.$h.$$
		$CLANG $HWARN $FLAGS "$HERE/$h.c" $objs $extra -o "$tmp" && mv "$tmp" "$OUT/$h" ||
			{ rm -f "$tmp"; die "cannot build $h"; }
	done
}

# replay - every seed once through its harness; one line per harness
replay() {
	local h failed=0 seeds log
	for h in $HARNESSES; do
		seeds=("$HERE/corpus/$h"/*)
		[ -e "${seeds[0]}" ] || { echo "$h: no seeds in corpus/$h"; failed=1; continue; }
		log=$(mktemp)
		if "$OUT/$h" -runs=1 "${seeds[@]}" >"$log" 2>&1; then
			echo "$h: ${#seeds[@]} seeds ok"
		else
			echo "$h: FAILED on a seed:"
			grep -E '^Running:|^fuzz_|ERROR|SUMMARY' "$log" | tail -n 5
			failed=1
		fi
		rm -f "$log"
	done
	return $failed
}

fuzz() {
	local seconds=$1 h failed=0 log execs crash
	WORK=$(mktemp -d) || die "mktemp failed"
	trap 'rm -rf "$WORK"' EXIT
	for h in $HARNESSES; do
		mkdir -p "$WORK/$h"
		cp "$HERE/corpus/$h"/* "$WORK/$h/" 2>/dev/null
		log=$OUT/$h.log
		"$OUT/$h" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
			-artifact_prefix="$OUT/$h-" ${FUZZ_ARGS:-} "$WORK/$h" >"$log" 2>&1
		local rc=$?
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
		if [ $rc -eq 0 ]; then
			echo "$h: ${execs:-?} executions in ${seconds}s, no failure" \
				"(corpus $(ls "$WORK/$h" | wc -l) inputs)"
		else
			crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
			echo "$h: FAILED after ${execs:-?} executions: $(grep -m1 -E '^fuzz_[a-z]+: |ERROR: ' "$log")"
			echo "    reproducer: ${crash:-none written}; log: $log"
			failed=1
		fi
	done
	return $failed
}

case "${1:-60}" in
build)	build ;;
replay)	build && replay ;;
*[!0-9]*|'') die "usage: $0 [SECONDS|build|replay]" ;;
*)	build && fuzz "$1" ;;
esac
