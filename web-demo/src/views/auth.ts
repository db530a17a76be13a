// Sign in and sign up.

import { alertBox, field, h } from '../dom';
import { humanMessage } from '../errors';
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
    minlength: signingUp ? 8 : null,
  });
  const displayName = h('input', { type: 'text', name: 'displayName', autocomplete: 'nickname', required: true, maxlength: 100 });
  const alert = alertBox();
  const notice = takeSessionNotice();
  if (notice) alert.show(notice, 'info');
  const submit = h('button', { type: 'submit' }, signingUp ? 'Sign up' : 'Sign in');

  const form = h(
    'form',
    { class: 'card narrow', novalidate: false },
    field('Email', email),
    signingUp ? field('Display name', displayName, 'Shown next to your videos.') : null,
    field('Password', password, signingUp ? 'At least 8 characters.' : undefined),
    alert,
    submit,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.clear();
    submit.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      if (signingUp) await signUp(email.value.trim(), password.value, displayName.value.trim());
      else await signIn(email.value.trim(), password.value);
      const next = new URLSearchParams(location.search).get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/', true);
    } catch (err) {
      alert.show(humanMessage(err));
      submit.disabled = false;
      form.removeAttribute('aria-busy');
      password.focus();
    }
  });

  main.append(
    h(
      'section',
      { class: 'auth' },
      h('h1', {}, signingUp ? 'Create your account' : 'Sign in to reelhouse'),
      h('p', { class: 'lede' }, 'Upload videos, watch them encode live, and stream them anywhere with adaptive HLS.'),
      form,
      h(
        'p',
        { class: 'switch' },
        signingUp ? 'Already have an account? ' : 'New here? ',
        h('a', { href: signingUp ? '/signin' : '/signup', 'data-link': true }, signingUp ? 'Sign in' : 'Create an account'),
      ),
    ),
  );
}
