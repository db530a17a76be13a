// /verify-email?token=…: the page the verification mail links to. Works signed
// in or not (the token alone says whose address it is).

import { h } from '../dom';
import { humanMessage } from '../errors';
import { graphql } from '../graphql';
import { gql, updateUser, user } from '../session';
import { takeLinkToken } from './link-token';

const VERIFY_EMAIL = graphql(`mutation VerifyEmail($token: String!) { verifyEmail(token: $token) { id email emailVerified } }`);

export function verifyEmailView(main: HTMLElement): void {
  const token = takeLinkToken();
  const status = h('div', { role: 'status', 'aria-live': 'polite' });
  main.append(h('h1', {}, 'Confirm your email address'), status);
  const next = () =>
    user()
      ? h('p', {}, h('a', { href: '/', 'data-link': true }, 'Go to your videos'))
      : h('p', {}, h('a', { href: '/signin', 'data-link': true }, 'Sign in'));

  if (!token) {
    status.append(
      h('p', { class: 'alert' }, 'This page needs the link from the verification mail. Open that link again.'),
      next(),
    );
    return;
  }
  status.append(h('p', { class: 'meta' }, 'Checking the link…'));
  main.setAttribute('aria-busy', 'true');
  void gql(VERIFY_EMAIL, { token })
    .then(({ verifyEmail }) => {
      updateUser(verifyEmail);
      status.replaceChildren(
        h('p', { class: 'alert', 'data-kind': 'info' }, `Thank you: ${verifyEmail.email} is confirmed.`),
        next(),
      );
    })
    .catch((err) => {
      // Used, expired or unknown tokens say which (BAD_USER_INPUT).
      status.replaceChildren(
        h('p', { class: 'alert' }, humanMessage(err)),
        user()
          ? h('p', {}, 'Ask for a new link with "Send the link again" at the top of the page.')
          : h('p', {}, 'Sign in to ask for a new link.'),
        next(),
      );
    })
    .finally(() => main.removeAttribute('aria-busy'));
}
