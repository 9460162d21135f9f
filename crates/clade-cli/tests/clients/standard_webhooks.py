"""Verifies webhook deliveries with the `standardwebhooks` package (PyPI), the Standard
Webhooks specification's own Python library, unchanged.

Usage: standard_webhooks.py DELIVERIES.json
The file holds a list of {"secret": str, "raw": bool, "headers": {...}, "body": str}; `raw`
secrets are given to the library as bytes (its raw-key form), others as `whsec_` strings.
Prints a list of {"verified": bool, "type": str|null, "tampered_refused": bool, "error": str}.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

deliveries = json.load(open(sys.argv[1]))
out = []
for delivery in deliveries:
    secret = delivery["secret"]
    hook = Webhook(secret.encode() if delivery["raw"] else secret)
    result = {"verified": False, "type": None, "tampered_refused": False, "error": None}
    try:
        payload = hook.verify(delivery["body"], delivery["headers"])
        result["verified"] = True
        result["type"] = payload.get("type")
    except WebhookVerificationError as err:
        result["error"] = str(err)
    try:
        hook.verify(delivery["body"] + " ", delivery["headers"])
    except WebhookVerificationError:
        result["tampered_refused"] = True
    out.append(result)
print(json.dumps(out))
