"""Verify recorded webhook deliveries with the official Standard Webhooks library
for Python (PyPI `standardwebhooks`), exactly as a receiver would.

Usage: python3 verify.py DELIVERIES.json
where the file is {"secret": "whsec_…", "deliveries": [{"headers": {…}, "body": "<raw body>"}]}.
Every delivery must verify (and its JSON body's `id` must be its `webhook-id`);
the same delivery with its body, id or timestamp changed, or checked with another
secret, must be refused, so a verifier that accepts anything fails here too.
Exit status 0 when all hold; prints one summary line.
"""

import base64
import json
import sys
from importlib.metadata import version

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def refused(webhook, body, headers):
    try:
        webhook.verify(body, headers)
    except WebhookVerificationError:
        return True
    return False


def main(path):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    secret = spec["secret"]
    deliveries = spec["deliveries"]
    if not deliveries:
        sys.exit("verify.py: no deliveries to verify")
    webhook = Webhook(secret)
    other = Webhook("whsec_" + base64.b64encode(b"\x01" * 32).decode())
    for i, delivery in enumerate(deliveries):
        headers, body = delivery["headers"], delivery["body"]
        try:
            payload = webhook.verify(body, headers)
        except WebhookVerificationError as err:
            sys.exit(f"verify.py: delivery {i} ({headers.get('webhook-id')}) refused: {err}")
        if payload.get("id") != headers["webhook-id"]:
            sys.exit(f"verify.py: delivery {i}: body id {payload.get('id')} is not webhook-id {headers['webhook-id']}")
        tampered = [
            ("body", body + " ", headers),
            ("id", body, {**headers, "webhook-id": headers["webhook-id"] + "x"}),
            ("timestamp", body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}),
        ]
        for what, b, h in tampered:
            if not refused(webhook, b, h):
                sys.exit(f"verify.py: delivery {i} still verified with its {what} changed")
        if not refused(other, body, headers):
            sys.exit(f"verify.py: delivery {i} verified with another secret")
    print(f"python standardwebhooks {version('standardwebhooks')}: {len(deliveries)} verified")


if __name__ == "__main__":
    main(sys.argv[1])
