#!/usr/bin/env python3
"""Parses CEF lines from stdin with pycef (an independent CEF parser from
PyPI) and prints one JSON object per line, extension values unescaped as the
CEF specification defines (pycef returns them raw)."""

import json
import re
import sys

import pycef

UNESCAPE = re.compile(r"\\(.)")


def unescape(value):
    return UNESCAPE.sub(lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value)


HEADER = {"CEFVersion", "DeviceVendor", "DeviceProduct", "DeviceVersion",
          "DeviceEventClassID", "Name", "DeviceName", "Severity", "DeviceSeverity"}

# One line per "\n" only: str.splitlines() would also cut a line at a
# character such as U+2028 inside a value, which CEF does not escape.
lines = sys.stdin.read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
for raw in lines:
    parsed = pycef.parse(raw)
    if parsed is None:
        print(json.dumps({"error": "unparsable", "line": raw}))
        continue
    print(json.dumps({k: (v if k in HEADER else unescape(v)) for k, v in parsed.items()}))
