// Sign in (with the two-factor step when the account has it) and sign up.

import { alertBox, field, h, PASSWORD_HINT } from '../dom';
import { ApiError, humanMessage } from '../errors';
import { navigate } from '../router';
import { signIn, signUp, takeSessionNotice } from '../session';

export function authView(main: HTMLElement, mode: 'signin' | 'signup'): void {
  const signingUp = mode === 'signup';
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
  const password = h('input', {
    type: 'password',
    name: 'password',
    autocomplete: signingUp ? 'new-password' : 'current-password',
    required: true,
    minlength: signingUp ? 10 : null,
  });
  const displayName = h('input', { type: 'text', name: 'displayName', autocomplete: 'nickname', required: true, maxlength: 100 });
  // The second step of signing in, shown when the server answers MFA_REQUIRED.
  const code = h('input', {
    type: 'text',
    name: 'totpCode',
    autocomplete: 'one-time-code',
    autocapitalize: 'off',
    spellcheck: 'false',
    maxlength: 64,
  });
  const codeField = field(
    'Authentication code',
    code,
    'The 6-digit code from your authenticator app, or one of your recovery codes.',
  );
  codeField.hidden = true;
  const alert = alertBox();
  const notice = takeSessionNotice();
  if (notice) alert.show(notice, 'info');
  const submit = h('button', { type: 'submit' }, signingUp ? 'Sign up' : 'Sign in');

  const form = h(
    'form',
    { class: 'card narrow', novalidate: false },
    field('Email', email),
    signingUp ? field('Display name', displayName, 'Shown next to your videos.') : null,
    field('Password', password, signingUp ? PASSWORD_HINT : undefined),
    signingUp ? null : codeField,
    alert,
    submit,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.clear();
    submit.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      if (signingUp) {
        await signUp(email.value.trim(), password.value, displayName.value.trim());
      } else {
        await signIn(email.value.trim(), password.value, codeField.hidden ? undefined : code.value.replace(/\s+/g, ''));
      }
      const next = new URLSearchParams(location.search).get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/', true);
    } catch (err) {
      submit.disabled = false;
      form.removeAttribute('aria-busy');
      if (err instanceof ApiError && err.code === 'MFA_REQUIRED') {
        codeField.hidden = false;
        code.required = true;
        alert.show(
          'Two-factor authentication is on for this account. Enter the code from your authenticator app, or one of your recovery codes.',
          'info',
        );
        code.focus();
        return;
      }
      alert.show(humanMessage(err));
      if (!codeField.hidden) {
        code.select();
        code.focus();
      } else {
        password.focus();
      }
    }
  });

  main.append(
    h(
      'section',
      { class: 'auth' },
      h('h1', {}, signingUp ? 'Create your account' : 'Sign in to reelhouse'),
      h('p', { class: 'lede' }, 'Upload videos, watch them encode live, and stream them anywhere with adaptive HLS.'),
      form,
      signingUp
        ? null
        : h('p', { class: 'switch' }, h('a', { href: '/forgot-password', 'data-link': true }, 'Forgot password?')),
      h(
        'p',
        { class: 'switch' },
        signingUp ? 'Already have an account? ' : 'New here? ',
        h('a', { href: signingUp ? '/signin' : '/signup', 'data-link': true }, signingUp ? 'Sign in' : 'Create an account'),
      ),
    ),
  );
}
