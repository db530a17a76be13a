// Verify recorded webhook deliveries with the official Standard Webhooks library
// for JavaScript (npm `standardwebhooks`), exactly as a receiver would.
// Usage: node verify.cjs DELIVERIES.json (same file and checks as verify.py).
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { Webhook, WebhookVerificationError } = require("standardwebhooks");

function fail(message) {
  console.error(`verify.cjs: ${message}`);
  process.exit(1);
}

function refused(webhook, body, headers) {
  try {
    webhook.verify(body, headers);
  } catch (err) {
    if (err instanceof WebhookVerificationError) return true;
    throw err;
  }
  return false;
}

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
if (!spec.deliveries.length) fail("no deliveries to verify");
const webhook = new Webhook(spec.secret);
const other = new Webhook(`whsec_${Buffer.alloc(32, 1).toString("base64")}`);
spec.deliveries.forEach(({ headers, body }, i) => {
  let payload;
  try {
    payload = webhook.verify(body, headers);
  } catch (err) {
    fail(`delivery ${i} (${headers["webhook-id"]}) refused: ${err.message}`);
  }
  if (payload.id !== headers["webhook-id"]) fail(`delivery ${i}: body id ${payload.id} is not webhook-id`);
  const tampered = [
    ["body", `${body} `, headers],
    ["id", body, { ...headers, "webhook-id": `${headers["webhook-id"]}x` }],
    ["timestamp", body, { ...headers, "webhook-timestamp": String(Number(headers["webhook-timestamp"]) - 1) }],
  ];
  for (const [what, b, h] of tampered) {
    if (!refused(webhook, b, h)) fail(`delivery ${i} still verified with its ${what} changed`);
  }
  if (!refused(other, body, headers)) fail(`delivery ${i} verified with another secret`);
});
const pkg = JSON.parse(
  fs.readFileSync(path.join(path.dirname(require.resolve("standardwebhooks")), "..", "package.json"), "utf8"),
);
console.log(`node standardwebhooks ${pkg.version}: ${spec.deliveries.length} verified`);
