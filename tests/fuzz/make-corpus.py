#!/usr/bin/env python3
"""make-corpus.py - write the seed corpora under tests/fuzz/corpus/<harness>/

The seeds are small and readable; rerun this after changing it (it removes
the seed files it does not write). Layouts are described in each harness.
"""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
seeds = {}


def add(harness, name, data):
    seeds.setdefault(harness, {})[name] = data


# --- fuzz_data: byte 0 = number of piece sizes, the sizes, then the body ---
def data_seed(name, body, sizes=b""):
    add("fuzz_data", name, bytes([len(sizes)]) + sizes + body)


HEAD = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: test\r\n\r\n"
normal = HEAD + b"Hello.\r\n\r\nBye.\r\n.\r\n"
data_seed("normal", normal)
data_seed("normal-bytewise", normal, b"\x01")
data_seed("normal-pieces", normal, b"\x03\x05\x07\x00\x02")
data_seed("empty", b".\r\n")
data_seed("empty-split", b".\r\n", b"\x01")
data_seed("no-end", HEAD + b"no end yet")
data_seed("stuffed", HEAD + b"..leading dot\r\n...\r\n..\r\n.x\r\nend\r\n.\r\n")
data_seed("stuffed-bytewise", HEAD + b"..leading dot\r\n..\r\n.\r\n", b"\x01")
data_seed("nul", HEAD + b"a\0b\r\n\0\r\n.\r\n")
data_seed("next-command", HEAD + b"x\r\n.\r\nQUIT\r\n")
smuggling = {
    "lf-dot-lf": b"\n.\n", "lf-dot-crlf": b"\n.\r\n", "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-cr": b"\r.\r", "crlf-dot-cr": b"\r\n.\r", "cr-dot-crlf": b"\r.\r\n",
    "lf-dot-cr": b"\n.\r", "crlf-dot-cr-crlf": b"\r\n.\r\r\n",
    "cr-crlf-dot-cr-crlf": b"\r\r\n.\r\r\n", "crlf-nul-dot-crlf": b"\r\n\0.\r\n",
    "crlf-dot-nul-crlf": b"\r\n.\0\r\n",
}
for name, seq in smuggling.items():
    data_seed("smuggle-" + name,
              HEAD + b"text" + seq + b"MAIL FROM:<evil@example.test>\r\n"
              b"RCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n")
data_seed("bare-lf-lines", b"one\ntwo\n\nthree\n.\r\n")
data_seed("bare-cr-lines", b"one\rtwo\r\rthree\r\n.\r\n")

# --- fuzz_reply: byte 0 = mode (1: payload lines become 250 lines, 0: raw) ---
KEYS = [b"mail.example.test", b"PIPELINING", b"SIZE 10240000", b"VRFY", b"ETRN",
        b"STARTTLS", b"AUTH PLAIN LOGIN", b"AUTH=PLAIN LOGIN", b"ENHANCEDSTATUSCODES",
        b"8BITMIME", b"DSN", b"SMTPUTF8", b"CHUNKING", b"BINARYMIME", b"XCLIENT NAME ADDR",
        b"XFORWARD NAME ADDR PROTO HELO", b"XEXCH50", b"CHECKPOINT"]
add("fuzz_reply", "postfix-lines", b"\x01" + b"\n".join(KEYS))
add("fuzz_reply", "hidden-last-lines", b"\x01" + b"mx.test\nSIZE 1000\nCHUNKING")
add("fuzz_reply", "lowercase-lines", b"\x01" + b"mx.test\nstarttls\nPipelining\nsize 5\n")
add("fuzz_reply", "greeting-only-lines", b"\x01" + b"mx.test Hello client.test")
add("fuzz_reply", "empty-last-lines", b"\x01" + b"mx.test\nDSN\n\n")
add("fuzz_reply", "raw-postfix",
    b"\x00" + b"".join(b"250-" + k + b"\r\n" for k in KEYS[:-1]) + b"250 " + KEYS[-1] + b"\r\n")
add("fuzz_reply", "raw-hidden-last", b"\x00250-mx.test\r\n250-SIZE 1\r\n250 STARTTLS\r\n")
add("fuzz_reply", "raw-all-hidden",
    b"\x00250-mx.test\r\n250-STARTTLS\r\n250-CHUNKING\r\n250 PIPELINING\r\n")
add("fuzz_reply", "raw-single", b"\x00250 mx.test\r\n")
add("fuzz_reply", "raw-three", b"\x00250\r\n")
add("fuzz_reply", "raw-greeting", b"\x00220-mx.test ESMTP\r\n220 ready\r\n")
add("fuzz_reply", "raw-error", b"\x00550 5.7.1 Access denied\r\n")
add("fuzz_reply", "raw-bad", b"\x00250-mx.test\r\n25X-oops\r\n250\r\n")
add("fuzz_reply", "raw-lf-only", b"\x00250-mx.test\n250-STARTTLS\n250 DSN\n")
add("fuzz_reply", "raw-cr-inside", b"\x00250-mx.test\r\n250-STARTTLS\r\r\n250 DSN\r\n")

# --- fuzz_addr: byte 0 = default port (%3) and printable cap (%65), byte 1 = verdict cap ---
def addr_seed(name, text, b0=0, b1=255):
    add("fuzz_addr", name, bytes([b0, b1]) + text)


for i, text in enumerate([b"127.0.0.1:25", b"[::1]:25", b"/var/run/clamav/clamd.ctl", b"10025",
                          b"host:99999", b"localhost", b"mail.example.test:2525", b"[::1]",
                          b"[127.0.0.1]:25", b"::1", b"host:0", b"0", b"65535", b"65536",
                          b"00025", b"[fe80::1%eth0]:10025", b"host:", b":25", b"[]:25",
                          b"./relative.sock", b"/" + b"x" * 120]):
    addr_seed("addr-%02d" % i, text, b0=i)
for i, text in enumerate([b"stream: OK\0", b"fd[10]: Eicar-Test-Signature.UNOFFICIAL FOUND\0",
                          b"stream: Win.Test.EICAR_HDB-1 FOUND\n",
                          b"stream: OK\n\n", b"INSTREAM size limit exceeded. ERROR\0",
                          b"fd[10]: lstat() failed: No such file or directory. ERROR\0",
                          b"stream:  FOUND\0", b"x FOUND", b": OK", b"stream: \x1b[31mBad\x07 FOUND\0"]):
    addr_seed("clamd-%02d" % i, text, b0=i * 7, b1=[255, 300 % 256, 8, 1, 0, 2, 5, 3, 4, 16][i])
for i, text in enumerate([b"X-AV-Checked: ClamAV using ClamSMTP", b"X-Bad:\r\nInjected: yes",
                          b"NoColon", b": empty", b"X-Empty: ", b"X Space: v",
                          b"X-Tab:\tv", b"X-Eight: \xe9t\xe9", b"", b"X-Long: " + b"v" * 990]):
    addr_seed("header-%02d" % i, text, b0=64 - i)

# --- fuzz_line: byte 0 = cap (low 3 bits: 16 2048 0 1 2 3 4094 64) | read sizes << 3 ---
def line_seed(name, payload, cap_sel, sizes=b""):
    add("fuzz_line", name, bytes([cap_sel | (len(sizes) << 3)]) + sizes + payload)


COMMANDS = (b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
            b"DATA\r\nQUIT\r\n")
line_seed("commands", COMMANDS, 1)
line_seed("commands-bytewise", COMMANDS, 1, b"\x00")
line_seed("commands-pieces", COMMANDS, 1, b"\x02\x06\x10")
line_seed("bare-lf", b"HELO a\nNOOP\nQUIT\n", 1)
line_seed("cr-split", b"NOOP\r\nNOOP\r\n", 1, b"\x04")
line_seed("unterminated", b"NOOP\r\nQUI", 1)
line_seed("empty-lines", b"\r\n\n\r\n", 0)
line_seed("long-bytewise", b"a" * 40 + b"\r\nNOOP\r\n" + b"b" * 15 + b"\r\n", 0, b"\x00")
line_seed("exact-cap", b"a" * 16 + b"\n" + b"b" * 15 + b"\r\n", 0)
line_seed("nul", b"NO\0OP\r\n\0\r\n", 7)
line_seed("cap0", b"\n\n", 2)
line_seed("reply-lines", b"250-mx.test\r\n250-SIZE 100\r\n250 DSN\r\n", 6, b"\x07")

for harness, files in seeds.items():
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if old not in files:
            os.remove(os.path.join(d, old))
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print("%s: %d seeds" % (harness, len(files)), file=sys.stderr)
