"""Scrapes a Prometheus text exposition and parses it with `prometheus_client` (PyPI), the
Prometheus project's own Python client, unchanged: an exposition it cannot parse fails here.

Usage: prometheus_scrape.py URL
Prints {"content_type": str, "samples": [{"name": str, "labels": {...}, "value": float}],
"types": {family: type}}.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    content_type = response.headers.get("Content-Type", "")
    text = response.read().decode("utf-8")

samples, types = [], {}
for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
print(json.dumps({"content_type": content_type, "samples": samples, "types": types}))
