// /account: the signed-in person's address, password, two-factor
// authentication (TOTP, with its QR code and recovery codes) and the devices
// they are signed in on.

import { alertBox, field, h, PASSWORD_HINT } from '../dom';
import { ApiError, humanMessage } from '../errors';
import { graphql, type ResultOf } from '../graphql';
import { navigate } from '../router';
import { gql, signOut, updateUser } from '../session';

const ACCOUNT = graphql(`
  query Account {
    me {
      id email displayName emailVerified totpEnabled
      sessions { id createdAt lastUsedAt ip userAgent current }
    }
  }
`);
const CHANGE_PASSWORD = graphql(
  `mutation ChangePassword($current: String!, $next: String!) { changePassword(currentPassword: $current, newPassword: $next) }`,
);
const CHANGE_EMAIL = graphql(
  `mutation ChangeEmail($email: String!, $password: String!) { changeEmail(newEmail: $email, password: $password) }`,
);
const ENROLL_TOTP = graphql(`mutation EnrollTotp { enrollTotp { secret otpauthUrl } }`);
const CONFIRM_TOTP = graphql(`mutation ConfirmTotp($code: String!) { confirmTotp(code: $code) }`);
const DISABLE_TOTP = graphql(`mutation DisableTotp($code: String!) { disableTotp(code: $code) }`);
const REVOKE_SESSION = graphql(`mutation RevokeSession($id: ID!) { revokeSession(id: $id) }`);
const REVOKE_ALL = graphql(`mutation RevokeAllSessions { revokeAllSessions }`);

type Me = ResultOf<typeof ACCOUNT>['me'];
type Session = Me['sessions'][number];

function when(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** "Chrome on Linux" from a User-Agent; the full string stays in the tooltip. */
export function describeDevice(userAgent: string | null | undefined): string {
  if (!userAgent) return 'Unknown device';
  const ua = userAgent;
  const browser = /Edg\//.test(ua)
    ? 'Edge'
    : /Firefox\//.test(ua)
      ? 'Firefox'
      : /(Chrome|Chromium)\//.test(ua)
        ? 'Chrome'
        : /Safari\//.test(ua)
          ? 'Safari'
          : /curl|python|node|Go-http/i.test(ua)
            ? 'A program'
            : 'A browser';
  const os = /Android/.test(ua)
    ? 'Android'
    : /iPhone|iPad/.test(ua)
      ? 'iOS'
      : /Windows/.test(ua)
        ? 'Windows'
        : /Mac OS X|Macintosh/.test(ua)
          ? 'macOS'
          : /Linux/.test(ua)
            ? 'Linux'
            : '';
  return os ? `${browser} on ${os}` : browser;
}

/** A base32 secret in groups of four, easier to type into an app by hand. */
function grouped(secret: string): string {
  return secret.replace(/\s+/g, '').replace(/(.{4})(?=.)/g, '$1 ');
}

function passwordInput(name: string, autocomplete: string): HTMLInputElement {
  return h('input', { type: 'password', name, autocomplete, required: true });
}

function codeInput(name: string): HTMLInputElement {
  return h('input', {
    type: 'text',
    name,
    inputmode: 'numeric',
    autocomplete: 'one-time-code',
    pattern: '[0-9 ]{6,7}',
    maxlength: 7,
    required: true,
  });
}

/** Submit handling shared by the small forms: busy state, errors, success text. */
function wire(form: HTMLFormElement, alert: ReturnType<typeof alertBox>, run: () => Promise<string | void>): void {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.clear();
    const button = form.querySelector<HTMLButtonElement>('button[type="submit"]');
    if (button) button.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      const done = await run();
      if (done) alert.show(done, 'info');
    } catch (err) {
      alert.show(humanMessage(err));
    } finally {
      if (button) button.disabled = false;
      form.removeAttribute('aria-busy');
    }
  });
}

export function accountView(main: HTMLElement): void {
  const pageAlert = alertBox();
  const addressSection = h('section', { class: 'card account-section', 'aria-labelledby': 'account-address' });
  const passwordSection = h('section', { class: 'card account-section', 'aria-labelledby': 'account-password' });
  const totpSection = h('section', { class: 'card account-section', 'aria-labelledby': 'account-totp' });
  const sessionsSection = h('section', { class: 'card account-section', 'aria-labelledby': 'account-sessions' });
  main.append(h('h1', {}, 'Your account'), pageAlert, addressSection, passwordSection, totpSection, sessionsSection);
  main.setAttribute('aria-busy', 'true');

  let me: Me | null = null;

  async function load(): Promise<void> {
    try {
      me = (await gql(ACCOUNT)).me;
      updateUser(me);
      renderAddress();
      renderTotp();
      renderSessions();
    } catch (err) {
      pageAlert.show(humanMessage(err));
    } finally {
      main.removeAttribute('aria-busy');
    }
  }

  // ------------------------------------------------------------ address

  function renderAddress(): void {
    if (!me) return;
    const email = h('input', { type: 'email', name: 'newEmail', autocomplete: 'email', required: true });
    const password = passwordInput('password', 'current-password');
    const alert = alertBox();
    const form = h(
      'form',
      { class: 'narrow' },
      h('h3', {}, 'Change your address'),
      field('New email address', email),
      field('Your password', password, 'To prove it is you.'),
      alert,
      h('button', { type: 'submit' }, 'Change the address'),
    );
    wire(form, alert, async () => {
      const next = email.value.trim();
      await gql(CHANGE_EMAIL, { email: next, password: password.value });
      form.reset();
      return `We sent a link to ${next}. Open it to confirm the new address; until then your account keeps ${me?.email}.`;
    });
    addressSection.replaceChildren(
      h('h2', { id: 'account-address' }, 'Email address'),
      h(
        'p',
        {},
        h('strong', {}, me.email),
        ' ',
        me.emailVerified
          ? h('span', { class: 'badge', 'data-status': 'READY' }, 'Confirmed')
          : h('span', { class: 'badge', 'data-status': 'PROCESSING' }, 'Not confirmed yet'),
      ),
      form,
    );
  }

  // ------------------------------------------------------------ password

  {
    const current = passwordInput('currentPassword', 'current-password');
    const next = h('input', { type: 'password', name: 'newPassword', autocomplete: 'new-password', required: true, minlength: 10 });
    const again = passwordInput('confirmPassword', 'new-password');
    const alert = alertBox();
    const form = h(
      'form',
      { class: 'narrow' },
      field('Current password', current),
      field('New password', next, PASSWORD_HINT),
      field('New password again', again),
      alert,
      h('button', { type: 'submit' }, 'Change the password'),
    );
    wire(form, alert, async () => {
      if (next.value !== again.value) throw new ApiError('BAD_USER_INPUT', 'the two new passwords differ: type the same one twice');
      await gql(CHANGE_PASSWORD, { current: current.value, next: next.value });
      form.reset();
      await load();
      return 'Your password was changed.';
    });
    passwordSection.append(h('h2', { id: 'account-password' }, 'Password'), form);
  }

  // ------------------------------------------------------------ two-factor

  function renderTotp(): void {
    if (!me) return;
    const heading = h('h2', { id: 'account-totp' }, 'Two-factor authentication');
    if (me.totpEnabled) {
      const code = codeInput('disableCode');
      const alert = alertBox();
      const form = h(
        'form',
        { class: 'narrow' },
        field('Code from your authenticator app', code, 'Or one of your recovery codes.'),
        alert,
        h('button', { type: 'submit', class: 'secondary' }, 'Turn off two-factor authentication'),
      );
      code.removeAttribute('pattern');
      code.removeAttribute('maxlength');
      code.setAttribute('inputmode', 'text');
      wire(form, alert, async () => {
        await gql(DISABLE_TOTP, { code: code.value.replace(/\s+/g, '') });
        if (me) me = { ...me, totpEnabled: false };
        renderTotp();
        pageAlert.show('Two-factor authentication is off. Signing in now needs only your password.', 'info');
      });
      totpSection.replaceChildren(
        heading,
        h(
          'p',
          {},
          h('span', { class: 'badge', 'data-status': 'READY' }, 'On'),
          ' Signing in asks for a code from your authenticator app after your password.',
        ),
        form,
      );
      return;
    }
    const alert = alertBox();
    const start = h('button', { type: 'button' }, 'Set up two-factor authentication');
    start.addEventListener('click', async () => {
      alert.clear();
      start.disabled = true;
      try {
        const { enrollTotp } = await gql(ENROLL_TOTP);
        await renderEnrolment(enrollTotp);
      } catch (err) {
        alert.show(humanMessage(err));
        start.disabled = false;
      }
    });
    totpSection.replaceChildren(
      heading,
      h(
        'p',
        {},
        h('span', { class: 'badge' }, 'Off'),
        ' Protect your account with a second step: a 6-digit code from an authenticator app on your phone.',
      ),
      alert,
      start,
    );
  }

  async function renderEnrolment(enrolment: { secret: string; otpauthUrl: string }): Promise<void> {
    // Drawn here, from the URI alone: the secret never leaves the page. The
    // QR library is loaded only by the few who turn two-factor on.
    const { default: QRCode } = await import('qrcode');
    const qr = await QRCode.toDataURL(enrolment.otpauthUrl, { errorCorrectionLevel: 'M', margin: 2, width: 220 });
    const code = codeInput('confirmCode');
    const alert = alertBox();
    const form = h(
      'form',
      { class: 'narrow' },
      field('Code from the app', code, 'The 6 digits it shows now.'),
      alert,
      h('button', { type: 'submit' }, 'Turn on two-factor authentication'),
    );
    wire(form, alert, async () => {
      const { confirmTotp } = await gql(CONFIRM_TOTP, { code: code.value.replace(/\s+/g, '') });
      if (me) me = { ...me, totpEnabled: true };
      renderRecoveryCodes(confirmTotp);
    });
    totpSection.replaceChildren(
      h('h2', { id: 'account-totp' }, 'Two-factor authentication'),
      h('ol', { class: 'steps' },
        h('li', {}, 'Scan this QR code with an authenticator app (such as Aegis, FreeOTP or Google Authenticator).'),
        h('li', {}, 'Type the code the app shows below.'),
      ),
      h('img', { class: 'qr', src: qr, width: 220, height: 220, alt: 'QR code of your two-factor secret, for an authenticator app' }),
      h(
        'p',
        {},
        'Cannot scan it? Enter this key in the app: ',
        h('code', { class: 'totp-secret', 'aria-label': 'Two-factor secret key' }, grouped(enrolment.secret)),
      ),
      h('p', {}, h('a', { href: enrolment.otpauthUrl, class: 'otpauth-link' }, 'Open in an authenticator app on this device')),
      form,
    );
    code.focus();
  }

  function renderRecoveryCodes(codes: string[]): void {
    const text = `reelhouse recovery codes for ${me?.email ?? 'your account'}\n\n${codes.join('\n')}\n`;
    const copyStatus = h('span', { class: 'meta', role: 'status' });
    const copy = h('button', { type: 'button', class: 'secondary' }, 'Copy');
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(text);
        copyStatus.textContent = 'Copied.';
      } catch {
        copyStatus.textContent = 'Copying is not allowed here: select the codes and copy them by hand.';
      }
    });
    const download = h('a', {
      class: 'button secondary',
      href: URL.createObjectURL(new Blob([text], { type: 'text/plain' })),
      download: 'reelhouse-recovery-codes.txt',
    }, 'Download');
    const done = h('button', { type: 'button' }, 'I have saved them');
    done.addEventListener('click', () => {
      URL.revokeObjectURL(download.href);
      renderTotp();
    });
    totpSection.replaceChildren(
      h('h2', { id: 'account-totp' }, 'Two-factor authentication'),
      h('p', { class: 'alert', 'data-kind': 'info', role: 'status' }, 'Two-factor authentication is on.'),
      h('h3', {}, 'Your recovery codes'),
      h(
        'p',
        {},
        'If you lose your phone, each of these signs you in once in place of a code. ',
        h('strong', {}, 'They are shown only now:'),
        ' save them somewhere safe, apart from your phone.',
      ),
      h('ol', { class: 'recovery-codes', 'aria-label': 'Recovery codes' }, codes.map((c) => h('li', {}, h('code', {}, c)))),
      h('div', { class: 'button-row' }, copy, download, done, copyStatus),
    );
    done.focus();
  }

  // ------------------------------------------------------------ sessions

  function sessionRow(s: Session): HTMLTableRowElement {
    const device = describeDevice(s.userAgent);
    const button = h(
      'button',
      { type: 'button', class: 'secondary', 'aria-label': `Sign out this device: ${device}${s.current ? ' (the one you are using)' : ''}` },
      'Sign out this device',
    );
    button.addEventListener('click', async () => {
      pageAlert.clear();
      button.disabled = true;
      try {
        await gql(REVOKE_SESSION, { id: s.id });
        if (s.current) {
          await signOut();
          navigate('/signin');
          return;
        }
        await load();
        pageAlert.show(`${device} is signed out.`, 'info');
      } catch (err) {
        pageAlert.show(humanMessage(err));
        button.disabled = false;
      }
    });
    return h(
      'tr',
      { 'data-session': s.id, 'data-current': s.current ? 'true' : 'false' },
      h(
        'td',
        {},
        h('span', { title: s.userAgent ?? '' }, device),
        s.current ? [' ', h('span', { class: 'badge', 'data-status': 'READY' }, 'This device')] : null,
      ),
      h('td', {}, s.ip ?? 'unknown'),
      h('td', {}, when(s.createdAt)),
      h('td', {}, when(s.lastUsedAt)),
      h('td', { class: 'actions' }, button),
    );
  }

  function renderSessions(): void {
    if (!me) return;
    const th = (text: string) => h('th', { scope: 'col' }, text);
    const all = h('button', { type: 'button', class: 'secondary' }, 'Sign out everywhere');
    all.addEventListener('click', async () => {
      all.disabled = true;
      try {
        await gql(REVOKE_ALL);
        await signOut();
        navigate('/signin');
      } catch (err) {
        pageAlert.show(humanMessage(err));
        all.disabled = false;
      }
    });
    sessionsSection.replaceChildren(
      h('h2', { id: 'account-sessions' }, 'Where you are signed in'),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          {},
          h('caption', {}, 'Your sessions, one per device or browser'),
          h('thead', {}, h('tr', {}, th('Device'), th('Address'), th('Signed in'), th('Last active'), th('Actions'))),
          h(
            'tbody',
            {},
            me.sessions.length ? me.sessions.map(sessionRow) : h('tr', {}, h('td', { colspan: 5 }, 'No sessions.')),
          ),
        ),
      ),
      all,
    );
  }

  void load();
}
