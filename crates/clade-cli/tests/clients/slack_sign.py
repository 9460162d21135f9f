"""Signs Events API requests with Slack's own SDK (`slack_sdk` from PyPI), unchanged.

Usage: slack_sign.py SECRET TIMESTAMP BODY_FILE
Prints {"x-slack-signature": ...}, the SDK's `v0=` signature of the body at that timestamp, and
{"verified": bool}, whether the SDK's own verifier takes it back (as a check of the call).
"""

import json
import sys

from slack_sdk.signature import SignatureVerifier

secret, timestamp, body_file = sys.argv[1:4]
body = open(body_file, encoding="utf-8").read()
verifier = SignatureVerifier(secret)
signature = verifier.generate_signature(timestamp=timestamp, body=body)
# The verifier checks the timestamp against its own clock: give it one at the timestamp.
verifier.clock.now = lambda: float(timestamp)
verified = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
print(json.dumps({"x-slack-signature": signature, "verified": verified}))
