"""Reads Sigil's /metrics with the Prometheus client library's own parser
and prints the sample count of each sigil_* family; fails if one is missing.

    SIGIL_HTTP=http://127.0.0.1:8080 python check_metrics.py
"""

import os
import sys
import urllib.request

# Sigil serves OpenMetrics text (it ends with '# EOF'), so its parser it is.
from prometheus_client.openmetrics.parser import text_string_to_metric_families

EXPECTED = [
    "sigil_rpc_requests",
    "sigil_rpc_duration_seconds",
    "sigil_validations",
    "sigil_logins",
    "sigil_active_sessions",
    "sigil_active_tokens",
    "sigil_revocation_index_entries",
    "sigil_store_flush_duration_seconds",
    "sigil_store_flush_batch_size",
    "sigil_event_watchers",
]


def main() -> int:
    base = os.environ.get("SIGIL_HTTP", "http://127.0.0.1:8080")
    with urllib.request.urlopen(f"{base}/metrics") as response:
        text = response.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    missing = [name for name in EXPECTED if name not in families]
    if missing:
        print("missing families:", missing, "parsed:", sorted(families))
        return 1
    valid = sum(s.value for s in families["sigil_validations"].samples if s.labels.get("outcome") == "valid" and s.name.endswith("_total"))
    print("parsed", len(families), "families; valid validations:", int(valid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
