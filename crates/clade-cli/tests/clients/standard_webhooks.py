"""Verifies webhook deliveries with the `standardwebhooks` package (PyPI), the Standard
Webhooks specification's own Python library, unchanged.

Usage: standard_webhooks.py verify DELIVERIES.json
       standard_webhooks.py sign SECRET MSG_ID TIMESTAMP BODY_FILE
`verify`: the file holds a list of {"secret": str, "raw": bool, "headers": {...}, "body": str}; `raw`
secrets are given to the library as bytes (its raw-key form), others as `whsec_` strings.
Prints a list of {"verified": bool, "type": str|null, "tampered_refused": bool, "error": str}.
`sign`: prints {"webhook-signature": ...}, the library's signature of the body (a `whsec_` secret).
"""

import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

if sys.argv[1] == "sign":
    secret, msg_id, timestamp, body_file = sys.argv[2:6]
    body = open(body_file, encoding="utf-8").read()
    at = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
    print(json.dumps({"webhook-signature": Webhook(secret).sign(msg_id, at, body)}))
    sys.exit(0)

deliveries = json.load(open(sys.argv[2]))
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
