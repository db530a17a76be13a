// Proves that schema drift fails the web build (`npm run typecheck:drift`, run by
// build.sh). Copies src/ and tsconfig.json into .drift/, then runs the same
// checks as `npm run typecheck` (gql.tada generate-output, gql.tada check,
// tsc --noEmit) on:
//
//   unchanged           the real schema and operations: must pass (so the
//                       failures below are the mutation's doing)
//   schema-field        Video.thumbnailUrl renamed in a copy of schema.graphql
//   operation-field     an operation (Watch) asks for a field the schema lacks
//   schema-enum         a JobStatus value (DEAD) removed from the schema copy
//
// Each mutated case must fail, naming the drifted field or value. Exits non-zero
// when a case does not behave so. DRIFT_CHECK_VERBOSE=1 prints the errors.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = dirname(fileURLToPath(import.meta.url));
const work = join(web, '.drift');
const bin = (name) => join(web, 'node_modules', '.bin', name);
const schema = readFileSync(join(web, '..', 'schema.graphql'), 'utf8');

function replaceOnce(text, from, to, what) {
  if (!text.includes(from)) throw new Error(`drift-check: ${what}: "${from}" not found; update drift-check.mjs`);
  return text.replace(from, to);
}

const cases = [
  { name: 'unchanged', expect: null },
  {
    name: 'schema-field',
    expect: 'thumbnailUrl',
    schema: (s) => s.replace(/(type Video \{[^}]*?)\bthumbnailUrl:/, '$1thumbnailURL:'),
  },
  {
    name: 'operation-field',
    expect: 'storyboardURL',
    file: ['src/views/player.ts', (t) => replaceOnce(t, 'thumbnailUrl storyboardUrl', 'thumbnailUrl storyboardURL', 'Watch query')],
  },
  {
    name: 'schema-enum',
    expect: 'DEAD',
    schema: (s) => s.replace(/(enum JobStatus \{[^}]*?)\n\s*DEAD\n/, (m, head) => `${head}\n`),
  },
];

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: work, encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

const tsconfig = JSON.parse(readFileSync(join(web, 'tsconfig.json'), 'utf8'));
tsconfig.include = ['src'];
for (const plugin of tsconfig.compilerOptions.plugins ?? []) {
  if (plugin.schema) plugin.schema = './schema.graphql';
}
let failed = 0;
try {
  for (const c of cases) {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    cpSync(join(web, 'src'), join(work, 'src'), { recursive: true });
    rmSync(join(work, 'src', 'graphql-env.d.ts'), { force: true });
    const mutated = c.schema ? c.schema(schema) : schema;
    if (c.schema && mutated === schema) throw new Error(`drift-check: ${c.name}: the schema mutation matched nothing; update drift-check.mjs`);
    writeFileSync(join(work, 'schema.graphql'), mutated);
    if (c.file) {
      const [path, edit] = c.file;
      writeFileSync(join(work, path), edit(readFileSync(join(web, path), 'utf8')));
    }
    writeFileSync(join(work, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));

    const gen = run(bin('gql.tada'), ['generate-output']);
    if (!gen.ok) throw new Error(`drift-check: ${c.name}: gql.tada generate-output failed:\n${gen.out}`);
    const check = run(bin('gql.tada'), ['check', '--fail-on-warn']);
    const tsc = run(bin('tsc'), ['--noEmit', '-p', 'tsconfig.json']);
    const out = `${check.out}\n${tsc.out}`;
    let verdict;
    if (c.expect === null) {
      verdict = check.ok && tsc.ok ? 'passes, as it must' : null;
    } else if (!check.ok || !tsc.ok) {
      const by = [!check.ok && 'gql.tada check', !tsc.ok && 'tsc'].filter(Boolean).join(' and ');
      verdict = out.includes(c.expect) ? `fails (${by}), naming ${c.expect}` : null;
    }
    if (verdict) {
      console.log(`drift-check: ${c.name}: ${verdict}`);
      if (process.env.DRIFT_CHECK_VERBOSE && c.expect) console.log(out.trim().replace(/^/gm, '    '));
    } else {
      failed++;
      console.error(`drift-check: ${c.name}: expected ${c.expect === null ? 'a clean check' : `a failure naming ${c.expect}`}; got:\n${out}`);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
