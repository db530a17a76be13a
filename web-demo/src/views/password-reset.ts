// A lost password: ask for a reset link by mail (/forgot-password), then choose
// a new password on the page that link opens (/reset-password?token=…).

import { alertBox, field, h, PASSWORD_HINT } from '../dom';
import { humanMessage } from '../errors';
import { graphql } from '../graphql';
import { gql, setSignInNotice, user } from '../session';
import { navigate } from '../router';
import { takeLinkToken } from './link-token';

const REQUEST_RESET = graphql(`mutation RequestPasswordReset($email: String!) { requestPasswordReset(email: $email) }`);
const RESET_PASSWORD = graphql(
  `mutation ResetPassword($token: String!, $password: String!) { resetPassword(token: $token, newPassword: $password) }`,
);

/** The same words whether or not an account has that address: the page reveals nothing. */
const SENT =
  'If an account uses that address, we have sent it a link to choose a new password. The link works once and expires soon; check your spam folder if it does not arrive.';

export function forgotPasswordView(main: HTMLElement): void {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
  const alert = alertBox();
  const submit = h('button', { type: 'submit' }, 'Send the reset link');
  const form = h('form', { class: 'card narrow' }, field('Email', email, 'The address you sign in with.'), alert, submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.clear();
    submit.disabled = true;
    try {
      await gql(REQUEST_RESET, { email: email.value.trim() });
      alert.show(SENT, 'info');
    } catch (err) {
      alert.show(humanMessage(err));
    } finally {
      submit.disabled = false;
    }
  });

  main.append(
    h(
      'section',
      { class: 'auth' },
      h('h1', {}, 'Forgot your password?'),
      h('p', { class: 'lede' }, 'Enter your address and we will mail you a link to choose a new password.'),
      form,
      h('p', { class: 'switch' }, h('a', { href: '/signin', 'data-link': true }, 'Back to sign in')),
    ),
  );
}

export function resetPasswordView(main: HTMLElement): void {
  const token = takeLinkToken();
  main.append(h('h1', {}, 'Choose a new password'));
  if (!token) {
    main.append(
      h(
        'p',
        { class: 'alert', role: 'alert' },
        'This page needs the link from the password-reset mail. Open the link again, or ask for a new one.',
      ),
      h('p', {}, h('a', { href: '/forgot-password', 'data-link': true }, 'Ask for a new reset link')),
    );
    return;
  }
  const password = h('input', { type: 'password', name: 'newPassword', autocomplete: 'new-password', required: true, minlength: 10 });
  const again = h('input', { type: 'password', name: 'confirmPassword', autocomplete: 'new-password', required: true });
  const alert = alertBox();
  const submit = h('button', { type: 'submit' }, 'Set the new password');
  const form = h(
    'form',
    { class: 'card narrow' },
    field('New password', password, PASSWORD_HINT),
    field('New password again', again),
    alert,
    submit,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.clear();
    if (password.value !== again.value) {
      alert.show('The two passwords differ. Type the same one twice.');
      again.focus();
      return;
    }
    submit.disabled = true;
    try {
      await gql(RESET_PASSWORD, { token, password: password.value });
      // The server ends every session of the account: sign in again, here too.
      const notice = 'Your password was changed and every session of the account was signed out. Sign in with the new password.';
      if (user()) {
        form.replaceWith(h('p', { class: 'alert', role: 'status', 'data-kind': 'info' }, notice));
      } else {
        setSignInNotice(notice);
        navigate('/signin', true);
      }
    } catch (err) {
      // Policy refusals (too short, too common) and used or expired links say which.
      alert.show(humanMessage(err));
      submit.disabled = false;
      password.focus();
    }
  });

  main.append(form, h('p', { class: 'switch' }, h('a', { href: '/forgot-password', 'data-link': true }, 'Ask for a new reset link')));
}
