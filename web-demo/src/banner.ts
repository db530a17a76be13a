// The banner under the header while the signed-in person has not confirmed
// their email address: what to do, and a button to mail the link again.

import { h } from './dom';
import { humanMessage } from './errors';
import { graphql } from './graphql';
import { gql, user } from './session';

const RESEND = graphql(`mutation ResendVerification { resendVerification }`);

export function renderVerifyBanner(banner: HTMLElement): void {
  const me = user();
  if (!me || me.emailVerified) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  const status = h('span', { class: 'meta', role: 'status' });
  const resend = h('button', { type: 'button', class: 'secondary' }, 'Send the link again');
  resend.addEventListener('click', async () => {
    resend.disabled = true;
    status.textContent = 'Sending…';
    try {
      await gql(RESEND);
      status.textContent = `Sent to ${me.email}. Check your inbox, and the spam folder.`;
    } catch (err) {
      status.textContent = humanMessage(err);
    } finally {
      resend.disabled = false;
    }
  });
  banner.hidden = false;
  banner.replaceChildren(
    h(
      'p',
      {},
      h('strong', {}, 'Check your mail. '),
      `We sent a link to ${me.email} to confirm your address; until you open it you cannot upload videos.`,
    ),
    h('div', { class: 'banner-actions' }, resend, status),
  );
}
