// End-to-end: the account lifecycle in headless Chromium against a real
// reelhouse server (started by scripts/test-web.sh): sign up → confirm the
// address through the link in the mail → turn on two-factor (the code computed
// here from the secret the page shows) → save the recovery codes → sign out →
// sign in, asked for the code → the account page lists this session as
// current; a forgotten password reset through the mailed link; and an admin
// finds a user on the Users page and disables then enables them.
//
//   REELHOUSE_URL     the server, e.g. http://127.0.0.1:38080
//   E2E_MAIL_DIR      where the server's mails land (see accounts-helpers.mjs)
//   E2E_CLIP          a small video (uploading it unconfirmed must be refused)
//   E2E_ARTIFACTS     where screenshots go
//   E2E_LABEL         names this run in artifact file names
//   E2E_ADMIN_EMAIL, E2E_ADMIN_PASSWORD  an admin; without them the admin test is skipped
//   CHROMIUM          the browser binary (default /usr/bin/chromium)

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { totpCode, totpParams, totpStep, waitForMailLink } from './accounts-helpers.mjs';

const BASE = process.env.REELHOUSE_URL ?? 'http://127.0.0.1:8080';
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? 'test-artifacts';
const LABEL = process.env.E2E_LABEL ?? 'run';
const CLIP = process.env.E2E_CLIP;
const ADMIN_EMAIL = process.env.E2E_ADMIN_EMAIL;
const ADMIN_PASSWORD = process.env.E2E_ADMIN_PASSWORD;
const PASSWORD = 'correct horse battery staple 42';

mkdirSync(ARTIFACTS, { recursive: true });

let browser;
const openPages = new Set();

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${LABEL}-accounts-${name}.png`), fullPage: true });
}

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, baseURL: BASE, acceptDownloads: true });
  const page = await context.newPage();
  openPages.add(page);
  context.on('close', () => openPages.delete(page));
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  return { context, page, problems };
}

/** The API, from the test (not the page). */
async function api(query, variables = {}, token) {
  const res = await fetch(`${BASE}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return res.json();
}

async function signInForm(page, email, password) {
  await page.goto('/signin');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** Wait for a time step after `step`: a code is refused a second use within its window. */
async function nextStep(step, period) {
  while (totpStep(period) <= step) await new Promise((r) => setTimeout(r, 250));
  return totpStep(period);
}

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
});

afterEach(async (t) => {
  let i = 0;
  for (const page of openPages) {
    i += 1;
    await page
      .screenshot({ path: join(ARTIFACTS, `${LABEL}-FAILED-${t.name.replace(/\W+/g, '-').slice(0, 40)}-${i}.png`), fullPage: true })
      .catch(() => undefined);
    await page.context().close().catch(() => undefined);
  }
  openPages.clear();
});

after(async () => {
  await browser?.close();
});

describe(`accounts in the web demo (${LABEL})`, () => {
  test('sign up, confirm by mail, turn on two-factor, sign in with a code, see this session', { timeout: 240_000 }, async () => {
    const { page, problems } = await newPage();
    const email = `accounts-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;

    // Sign up: the app says to check the mail, in a banner on every page.
    await page.goto('/signup');
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Display name').fill('E2E Accounts');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign up' }).click();
    await page.getByRole('heading', { name: 'Your videos' }).waitFor();
    const banner = page.getByRole('region', { name: 'Account notice' });
    await banner.getByText('Check your mail').waitFor();
    assert.match(await banner.textContent(), new RegExp(email.replace(/[.+]/g, '\\$&')));
    await shot(page, '1-check-your-mail');

    // Unconfirmed, an upload is refused, and the page says why in words.
    if (CLIP) {
      await page.getByRole('link', { name: 'Upload', exact: true }).click();
      await page.getByLabel('Title').fill('Too early');
      await page.getByLabel('Video file').setInputFiles(CLIP);
      await page.getByRole('button', { name: 'Upload' }).click();
      const refusal = page.locator('form .alert');
      await refusal.getByText(/confirm your email address/i).waitFor();
      assert.doesNotMatch(await refusal.textContent(), /EMAIL_NOT_VERIFIED/, 'words, not codes');
      await shot(page, '2-upload-refused-unconfirmed');
    }

    // "Send the link again" mails a second link; the newest one confirms the address.
    await waitForMailLink(email, '/verify-email');
    await banner.getByRole('button', { name: 'Send the link again' }).click();
    await banner.getByText(`Sent to ${email}`).waitFor();
    const { link, mails } = await waitForMailLink(email, '/verify-email', { count: 2 });
    console.log(`# ${mails.length} verification mails; link ${link.replace(/token=.*/, 'token=…')}`);
    assert.equal(new URL(link).origin, new URL(BASE).origin, 'the link opens this server');
    await page.goto(link);
    await page.getByText(`${email} is confirmed`).waitFor();
    assert.ok(!page.url().includes('token='), 'the token is dropped from the address bar');
    await banner.waitFor({ state: 'hidden' });
    await shot(page, '3-confirmed');
    // The link works once.
    await page.goto(link);
    await page.getByRole('heading', { name: 'Confirm your email address' }).waitFor();
    await page.locator('[role="status"] .alert').waitFor();
    assert.doesNotMatch(await page.locator('[role="status"] .alert').textContent(), /is confirmed/);

    // Two-factor: the page shows the secret, a QR code drawn in the page, and the otpauth link.
    await page.getByRole('link', { name: 'Account', exact: true }).click();
    await page.getByRole('heading', { name: 'Your account' }).waitFor();
    await page.locator('section', { has: page.getByRole('heading', { name: 'Email address' }) }).getByText('Confirmed').waitFor();
    await page.getByRole('button', { name: 'Set up two-factor authentication' }).click();
    const qr = page.getByRole('img', { name: /QR code/ });
    await qr.waitFor();
    const qrImage = await qr.evaluate((img) => ({ src: img.src.slice(0, 22), width: img.naturalWidth }));
    assert.equal(qrImage.src, 'data:image/png;base64,', 'the QR code is drawn locally');
    assert.ok(qrImage.width > 100, `the QR code has pixels: ${qrImage.width}`);
    const secret = (await page.locator('code.totp-secret').textContent()).replace(/\s+/g, '');
    const otpauth = await page.getByRole('link', { name: 'Open in an authenticator app on this device' }).getAttribute('href');
    const params = totpParams(otpauth);
    assert.match(otpauth, /^otpauth:\/\/totp\//);
    assert.equal(params.secret.toUpperCase(), secret.toUpperCase(), 'the key shown is the one in the QR code');
    await shot(page, '4-totp-enrol');
    let usedStep = totpStep(params.period);
    await page.getByLabel('Code from the app').fill(totpCode(secret, { ...params, step: usedStep }));
    await page.getByRole('button', { name: 'Turn on two-factor authentication' }).click();

    // Ten recovery codes, shown once: saved through "Download".
    await page.getByRole('heading', { name: 'Your recovery codes' }).waitFor();
    const codes = (await page.getByRole('list', { name: 'Recovery codes' }).locator('li').allTextContents()).map((c) => c.trim());
    assert.equal(codes.length, 10, `ten recovery codes: ${codes.length}`);
    assert.equal(new Set(codes).size, 10, 'all different');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download' }).click()]);
    const saved = readFileSync(await download.path(), 'utf8');
    for (const code of codes) assert.ok(saved.includes(code), 'the downloaded file holds every code');
    await shot(page, '5-recovery-codes');
    await page.getByRole('button', { name: 'I have saved them' }).click();
    await page.getByRole('button', { name: 'Turn off two-factor authentication' }).waitFor();

    // Sign out; signing in now asks for the code.
    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await signInForm(page, email, PASSWORD);
    const codeField = page.getByLabel('Authentication code');
    await codeField.waitFor();
    await page.getByText('Two-factor authentication is on for this account').waitFor();
    await shot(page, '6-asked-for-code');
    // A wrong code is refused.
    const step = await nextStep(usedStep, params.period);
    const right = totpCode(secret, { ...params, step });
    await codeField.fill(String((Number(right) + 1) % 10 ** params.digits).padStart(params.digits, '0'));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('form .alert[data-kind="error"]').waitFor();
    assert.equal(new URL(page.url()).pathname, '/signin', 'still signing in');
    // The right one (of a new time step: the one used to turn 2FA on is spent) signs in.
    usedStep = totpStep(params.period);
    await codeField.fill(totpCode(secret, { ...params, step: usedStep }));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Your videos' }).waitFor();

    // The account page lists this session, marked as this device.
    await page.getByRole('link', { name: 'Account', exact: true }).click();
    const sessions = page.locator('table', { has: page.locator('caption', { hasText: 'Your sessions' }) });
    await sessions.locator('tbody tr').first().waitFor();
    const current = sessions.locator('tr[data-current="true"]');
    assert.equal(await current.count(), 1, 'exactly one session is this one');
    await current.getByText('This device', { exact: true }).waitFor();
    assert.match(await current.textContent(), /Chrome on Linux/);
    await shot(page, '7-sessions');

    // A recovery code signs in once, on a second device...
    const second = await newPage();
    await signInForm(second.page, email, PASSWORD);
    await second.page.getByLabel('Authentication code').fill(codes[0]);
    await second.page.getByRole('button', { name: 'Sign in' }).click();
    await second.page.getByRole('heading', { name: 'Your videos' }).waitFor();
    // ...and never again.
    // (The sign-ins above may have used up the sign-in rate limit: wait it out, so the
    // answer is about the code.)
    let again;
    for (let i = 0; i < 5; i += 1) {
      again = await api('mutation($i: LoginInput!) { login(input: $i) { accessToken } }', {
        i: { email, password: PASSWORD, totpCode: codes[0] },
      });
      const limited = again.errors?.[0]?.extensions;
      if (limited?.code !== 'RATE_LIMITED') break;
      await new Promise((resolve) => setTimeout(resolve, (Number(limited.retryAfter) || 1) * 1000 + 200));
    }
    assert.equal(again.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED', `a used recovery code is refused: ${JSON.stringify(again)}`);

    // This device signs the other one out.
    await page.reload();
    await sessions.locator('tbody tr').nth(1).waitFor();
    const other = sessions.locator('tr[data-current="false"]');
    assert.equal(await other.count(), 1, 'the second device is listed');
    await other.getByRole('button', { name: /Sign out/ }).click();
    await page.getByText('is signed out.').waitFor();
    assert.equal(await sessions.locator('tbody tr').count(), 1, 'only this session is left');
    // The other device finds out at its next refresh (access tokens live 8 s here) or request.
    await second.page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await second.page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 30_000 });
    await second.context.close();

    assert.deepEqual(problems, [], 'no errors in the page');
  });

  test('a forgotten password is reset through the mailed link, which works once', { timeout: 120_000 }, async () => {
    const email = `reset-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
    const registered = await api('mutation($i: RegisterInput!) { register(input: $i) { refreshToken } }', {
      i: { email, password: PASSWORD, displayName: 'E2E Reset' },
    });
    assert.ok(!registered.errors, JSON.stringify(registered.errors));
    const { page, problems } = await newPage();

    // The same answer for an address with no account and for one with an account.
    const ask = async (address) => {
      await page.goto('/signin');
      await page.getByRole('link', { name: 'Forgot password?' }).click();
      await page.getByRole('heading', { name: 'Forgot your password?' }).waitFor();
      await page.getByLabel('Email').fill(address);
      await page.getByRole('button', { name: 'Send the reset link' }).click();
      const answer = page.locator('form .alert[data-kind="info"]');
      await answer.waitFor();
      return answer.textContent();
    };
    const unknown = await ask(`nobody-${Date.now()}@example.com`);
    const known = await ask(email);
    assert.equal(known, unknown, 'the page does not tell whether an account exists');
    await shot(page, '10-reset-requested');

    const { link } = await waitForMailLink(email, '/reset-password');
    assert.equal(new URL(link).origin, new URL(BASE).origin, 'the link opens this server');
    await page.goto(link);
    await page.getByRole('heading', { name: 'Choose a new password' }).waitFor();
    assert.ok(!page.url().includes('token='), 'the token is dropped from the address bar');
    // The server's password policy speaks through the page.
    await page.getByLabel('New password', { exact: true }).fill('abcdefghijkl');
    await page.getByLabel('New password again').fill('abcdefghijkl');
    await page.getByRole('button', { name: 'Set the new password' }).click();
    await page.locator('form .alert').getByText(/two kinds of characters/).waitFor();
    await shot(page, '11-reset-policy');
    const newPassword = 'a new password 2 remember';
    await page.getByLabel('New password', { exact: true }).fill(newPassword);
    await page.getByLabel('New password again').fill(newPassword);
    await page.getByRole('button', { name: 'Set the new password' }).click();
    await page.getByText('Your password was changed').waitFor();
    assert.equal(new URL(page.url()).pathname, '/signin');

    // Every earlier session ended; the old password no longer works; the new one does.
    const refreshed = await api('mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }', {
      t: registered.data.register.refreshToken,
    });
    assert.equal(refreshed.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED', 'the reset ended the earlier session');
    const old = await api('mutation($i: LoginInput!) { login(input: $i) { accessToken } }', { i: { email, password: PASSWORD } });
    assert.equal(old.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED', 'the old password is refused');
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(newPassword);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Your videos' }).waitFor();

    // The link works once.
    await page.goto(link);
    await page.getByLabel('New password', { exact: true }).fill('yet another password 3');
    await page.getByLabel('New password again').fill('yet another password 3');
    await page.getByRole('button', { name: 'Set the new password' }).click();
    await page.locator('form .alert').waitFor();
    assert.doesNotMatch(await page.locator('form .alert').textContent(), /password was changed/);
    assert.deepEqual(problems, [], 'no errors in the page');
  });

  test('an admin finds a user by search, disables and enables them', { timeout: 120_000, skip: !ADMIN_EMAIL }, async () => {
    // The user, signed up through the API.
    const tag = `findme${Date.now()}${Math.floor(Math.random() * 1e4)}`;
    const email = `${tag}@example.com`;
    const registered = await api('mutation($i: RegisterInput!) { register(input: $i) { user { id } } }', {
      i: { email, password: PASSWORD, displayName: `Person ${tag}` },
    });
    assert.ok(!registered.errors, JSON.stringify(registered.errors));
    const canSignIn = async () =>
      !(await api('mutation($i: LoginInput!) { login(input: $i) { accessToken } }', { i: { email, password: PASSWORD } })).errors;
    assert.equal(await canSignIn(), true);

    const { page, problems } = await newPage();
    await signInForm(page, ADMIN_EMAIL, ADMIN_PASSWORD);
    await page.getByRole('heading', { name: 'Your videos' }).waitFor();
    await page.getByRole('link', { name: 'Users', exact: true }).click();
    await page.getByRole('heading', { name: 'Users' }).waitFor();

    await page.getByLabel('Search').fill(tag);
    await page.getByRole('button', { name: 'Search' }).click();
    const rows = page.locator('table.users tbody tr');
    const row = page.locator(`tr[data-email="${email}"]`);
    await row.waitFor();
    // The unfiltered list may still be on screen (it holds that user too): wait for
    // the search's answer to replace it.
    for (let i = 0; i < 100 && (await rows.count()) !== 1; i += 1) await page.waitForTimeout(100);
    assert.equal(await rows.count(), 1, 'the search finds that one user');
    await shot(page, '8-admin-found');

    await row.getByRole('button', { name: `Disable ${email}` }).click();
    await page.getByText(`${email} is disabled`).waitFor();
    await page.locator(`tr[data-email="${email}"] .user-state`).getByText('Disabled').waitFor();
    assert.equal(await canSignIn(), false, 'a disabled user cannot sign in');
    // The status filter: among active users the search finds nobody now.
    await page.getByLabel('Status').selectOption('false');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByText('No user matches these filters.').waitFor();
    await page.getByLabel('Status').selectOption('true');
    await page.getByRole('button', { name: 'Search' }).click();
    await row.waitFor();
    await shot(page, '9-admin-disabled');

    await row.getByRole('button', { name: `Enable ${email}` }).click();
    await page.getByText(`${email} is enabled again`).waitFor();
    await page.locator(`tr[data-email="${email}"] .user-state`).getByText('Active').waitFor();
    assert.equal(await canSignIn(), true, 'enabled again, the user signs in');
    assert.deepEqual(problems, [], 'no errors in the page');
  });
});
