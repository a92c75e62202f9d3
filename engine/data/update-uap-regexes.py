#!/usr/bin/env python3
"""Converts uap-core's regexes.yaml into the JSON the engine embeds.

Usage: update-uap-regexes.py path/to/uap-core/regexes.yaml

The User-Agent patterns are data from the ua-parser project (uap-core,
Apache-2.0, see uap-core-LICENSE). The engine reads JSON so that no YAML
parser is needed at build or run time. Take regexes.yaml from a uap-core
release, run this, and commit both the JSON and the version in
engine/data/README.md.
"""
import json
import sys

import yaml

KEYS = ("user_agent_parsers", "os_parsers", "device_parsers")

with open(sys.argv[1], encoding="utf-8") as f:
    data = yaml.safe_load(f)
out = {k: data[k] for k in KEYS}
with open("uap-regexes.json", "w", encoding="utf-8") as f:
    json.dump(out, f, separators=(",", ":"), ensure_ascii=False)
    f.write("\n")
print({k: len(out[k]) for k in KEYS})
