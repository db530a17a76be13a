// GraphiQL at GET /graphql, offline: in headless Chromium with every request
// to any host but the server blocked (and recorded), the page loads from the
// server alone, a query runs with the Authorization typed in its header editor,
// and a `videoProgress` subscription started from it receives a live event,
// authenticated by the same header sent as the WebSocket's connection_init
// payload. Started by scripts/test-web.sh like journey.test.mjs.
//
//   REELHOUSE_URL   the server, e.g. http://127.0.0.1:38080
//   E2E_ARTIFACTS   where screenshots go
//   E2E_LABEL       names this run in artifact file names
//   CHROMIUM        the browser binary (default /usr/bin/chromium)

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';

const BASE = process.env.REELHOUSE_URL ?? 'http://127.0.0.1:8080';
const ORIGIN = new URL(BASE).origin;
const HOST = new URL(BASE).hostname;
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? 'test-artifacts';
const LABEL = process.env.E2E_LABEL ?? 'run';
const PASSWORD = 'correct horse battery staple 42';

mkdirSync(ARTIFACTS, { recursive: true });

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    // Belt and braces: no name but the server's resolves either.
    args: ['--no-sandbox', `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${HOST}`],
  });
});

after(async () => {
  await browser?.close();
});

/** The API, from the test (not the page). */
async function gql(query, variables = {}, token) {
  const res = await fetch(`${BASE}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  assert.ok(!body.errors, JSON.stringify(body.errors));
  return body.data;
}

/**
 * A signed-up account. Access tokens may live only seconds on the test server,
 * so `token()` trades the refresh token for a fresh one each time.
 */
async function account() {
  const email = `graphiql-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
  const { register } = await gql(
    'mutation($i: RegisterInput!) { register(input: $i) { refreshToken user { id } } }',
    { i: { email, password: PASSWORD, displayName: 'E2E GraphiQL' } },
  );
  let refresh = register.refreshToken;
  return {
    id: register.user.id,
    async token() {
      const { refreshToken } = await gql('mutation($r: String!) { refreshToken(refreshToken: $r) { accessToken refreshToken } }', {
        r: refresh,
      });
      refresh = refreshToken.refreshToken;
      return refreshToken.accessToken;
    },
  };
}

/** Replace the text of one of GraphiQL's (Monaco) editors, as a person pasting. */
async function setEditor(page, editor, text) {
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

/**
 * Put an operation in the query editor and wait until GraphiQL has taken it in:
 * it names the active tab after the operation (run sooner, and it would send
 * the previous operation's name).
 */
async function setOperation(page, editor, name, text) {
  await setEditor(page, editor, text);
  await page.locator('.graphiql-tab-active').getByText(name, { exact: true }).waitFor();
}

/** What the response pane shows. */
async function responseText(page) {
  return (await page.locator('.graphiql-response .view-lines').innerText()).replace(/\u00a0/g, ' ');
}

describe(`GraphiQL offline (${LABEL})`, () => {
  test('loads from the server alone; a query and a videoProgress subscription run with the typed Authorization', { timeout: 120_000 }, async () => {
    const me = await account();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();

    // Every request to another host is blocked and recorded; none may be attempted.
    const foreign = [];
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === ORIGIN) return route.continue();
      foreign.push(url);
      return route.abort('blockedbyclient');
    });
    await context.routeWebSocket(
      (url) => url.hostname !== HOST || url.port !== new URL(BASE).port,
      (ws) => {
        foreign.push(ws.url());
        ws.close();
      },
    );
    context.on('request', (req) => {
      const url = req.url();
      if (!url.startsWith('data:') && !url.startsWith('blob:') && new URL(url).origin !== ORIGIN) foreign.push(url);
    });
    const problems = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
    });
    const inits = [];
    const received = [];
    page.on('websocket', (ws) => {
      ws.on('framesent', ({ payload }) => {
        const message = JSON.parse(String(payload));
        if (message.type === 'connection_init') inits.push({ url: ws.url(), payload: message.payload });
      });
      ws.on('framereceived', ({ payload }) => received.push(JSON.parse(String(payload))));
    });
    page.on('response', (r) => {
      if (r.status() >= 400) {
        const body = (r.request().postData() ?? '').slice(0, 160).replace(/\s+/g, ' ');
        console.log(`# ${r.status()} ${r.request().method()} ${r.url()} ${body}`);
      }
    });
    const posts = [];
    page.on('request', (req) => {
      if (req.method() === 'POST' && req.url() === `${ORIGIN}/graphql`) posts.push(req);
    });

    try {
      await run(page, me, { foreign, problems, inits, received, posts });
    } catch (err) {
      await page.screenshot({ path: join(ARTIFACTS, `${LABEL}-FAILED-graphiql.png`) }).catch(() => undefined);
      const shown = await responseText(page).catch(() => '(no response pane)');
      console.log(`# response pane: ${shown}\n# problems: ${JSON.stringify(problems)}`);
      throw err;
    } finally {
      await context.close();
    }
  });
});

/** The page's part of the test above. */
async function run(page, me, { foreign, problems, inits, received, posts }) {
  const res = await page.goto(`${BASE}/graphql`);
  assert.equal(res.status(), 200);
  const csp = res.headers()['content-security-policy'] ?? '';
  assert.match(csp, /^default-src 'self';/, csp);
  assert.doesNotMatch(csp, /https?:|\*/, `the policy names no other host: ${csp}`);
  const queryEditor = page.locator('.graphiql-query-editor .monaco-editor');
  await queryEditor.waitFor({ timeout: 30_000 });
  // The explorer plugin is there and shows the schema (fetched by introspection).
  await page.locator('button[aria-label="Show GraphiQL Explorer"]').click();
  await page.locator('.graphiql-plugin').getByText('serverInfo', { exact: true }).waitFor();
  await page.screenshot({ path: join(ARTIFACTS, `${LABEL}-graphiql-1-loaded.png`) });
  await page.locator('button[aria-label="Hide GraphiQL Explorer"]').click();

  // A query, with the access token typed into the header editor.
  await page.getByRole('button', { name: 'Headers' }).click();
  const headersEditor = page.locator('.graphiql-editor-tool .monaco-editor').last();
  let token = await me.token();
  await setEditor(page, headersEditor, JSON.stringify({ Authorization: `Bearer ${token}` }));
  await setOperation(page, queryEditor, 'Me', 'query Me { me { id displayName } }');
  await page.locator('.graphiql-execute-button').click();
  // (The pane wraps long lines, so it is read for short values; the whole answer
  // is read off the network.)
  await page.waitForFunction(() =>
    (document.querySelector('.graphiql-response .view-lines')?.textContent ?? '')
      .replace(/\u00a0/g, ' ')
      .includes('"displayName": "E2E GraphiQL"'),
  );
  const sent = posts.find((req) => (req.postData() ?? '').includes('query Me'));
  assert.ok(sent, 'the query went to POST /graphql');
  assert.equal(sent.headers().authorization, `Bearer ${token}`, 'with the typed header');
  const answer = await (await sent.response()).json();
  assert.equal(answer.data?.me?.id, me.id, JSON.stringify(answer));

  // A subscription to one of this account's private videos, from the page; the
  // test deletes the video and the page must receive the DELETED event. Access
  // tokens may live seconds on the test server (and the server closes a socket
  // whose token expired), so a slow machine gets another try with a fresh one.
  let outcome = '';
  for (let attempt = 1; attempt <= 3 && outcome !== 'deleted'; attempt += 1) {
    const { createVideo } = await gql(
      'mutation($i: CreateVideoInput!) { createVideo(input: $i) { id } }',
      { i: { title: `GraphiQL ${LABEL} ${attempt}`, visibility: 'PRIVATE' } },
      await me.token(),
    );
    token = await me.token();
    await setEditor(page, headersEditor, JSON.stringify({ Authorization: `Bearer ${token}` }));
    await setOperation(
      page,
      queryEditor,
      'Follow',
      `subscription Follow { videoProgress(videoId: "${createVideo.id}") { videoId kind snapshot status } }`,
    );
    const initsBefore = inits.length;
    // (A failed attempt's message stays in the pane until the next answer replaces it.)
    const shownBefore = await page.locator('.graphiql-response .view-lines').textContent();
    await page.locator('.graphiql-execute-button').click();
    const first = await page.waitForFunction((before) => {
      const shown = document.querySelector('.graphiql-response .view-lines')?.textContent ?? '';
      const text = shown.replace(/\u00a0/g, ' ');
      if (text.includes('"snapshot": true')) return 'snapshot';
      if (shown !== before && /Socket closed|error/i.test(text)) return 'closed';
      return false;
    }, shownBefore);
    if ((await first.jsonValue()) !== 'snapshot') {
      console.log(`# attempt ${attempt}: ${await responseText(page)}`);
      continue;
    }
    // The socket was opened with the header editor's headers as connection_init payload.
    const init = inits.slice(initsBefore).at(-1);
    assert.ok(init, 'the subscription opened a WebSocket');
    assert.equal(new URL(init.url).pathname, '/graphql/ws');
    assert.deepEqual(init.payload, { Authorization: `Bearer ${token}` });
    const snapshot = received.find((m) => m.type === 'next' && m.payload?.data?.videoProgress?.snapshot);
    assert.equal(snapshot?.payload.data.videoProgress.videoId, createVideo.id, 'the snapshot of that video');

    // Drive a live event: delete the video through the API.
    await gql('mutation($id: ID!) { deleteVideo(id: $id) }', { id: createVideo.id }, await me.token());
    const next = await page.waitForFunction(() => {
      const text = (document.querySelector('.graphiql-response .view-lines')?.textContent ?? '').replace(/\u00a0/g, ' ');
      if (text.includes('"kind": "DELETED"')) return 'deleted';
      if (/Socket closed|error/i.test(text)) return 'closed';
      return false;
    });
    outcome = await next.jsonValue();
    if (outcome !== 'deleted') console.log(`# attempt ${attempt}: ${await responseText(page)}`);
  }
  assert.equal(outcome, 'deleted', 'the subscription received the live DELETED event');
  assert.ok(
    received.some((m) => m.type === 'next' && m.payload?.data?.videoProgress?.kind === 'DELETED'),
    'over the WebSocket',
  );
  await page.screenshot({ path: join(ARTIFACTS, `${LABEL}-graphiql-2-subscription.png`) });

  assert.deepEqual(foreign, [], 'no request was attempted to another host');
  assert.deepEqual(problems, [], 'no page errors, no console errors (a CSP violation is one)');
}
