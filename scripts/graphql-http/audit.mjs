// Runs the GraphQL-over-HTTP audit of the `graphql-http` npm package against a URL
// and prints every result that is not ok; exits 1 on any error or warning.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const label = process.argv[3] ?? url;
const results = await auditServer({ url });
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const r of results) {
  counts[r.status] += 1;
  if (r.status !== 'ok') {
    console.log(`  ${r.status.toUpperCase()} ${r.id} ${r.name}${r.reason ? ' — ' + r.reason : ''}`);
  }
}
console.log(`graphql-http audit (${label}): ${counts.ok} ok, ${counts.error} errors, ${counts.warn} warnings, ${counts.notice} notices`);
process.exit(counts.error || counts.warn ? 1 : 0);
