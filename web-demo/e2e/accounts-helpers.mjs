// Helpers of the browser tests for accounts: the links in the mails the server
// sent, and TOTP codes computed here (RFC 6238), as a person's phone would.
//
//   E2E_MAIL_DIR  where the server's mails land, one .eml file each: the
//                 `{data_dir}/mail/` of an embedded server (the fallback when
//                 no SMTP server is set), or the directory of an SMTP sink.
//                 Several directories may be given, separated by ':' (a
//                 separate worker process sends mail from its own data dir).

import { createHmac } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const MAIL_DIRS = (process.env.E2E_MAIL_DIR ?? '').split(':').filter(Boolean);

/** Split a message (or a MIME part) into its headers (lower-case names) and body. */
function splitPart(raw) {
  const m = /\r?\n\r?\n/.exec(raw);
  const head = m ? raw.slice(0, m.index) : raw;
  const body = m ? raw.slice(m.index + m[0].length) : '';
  const headers = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { headers, body };
}

function decodeQuotedPrintable(text) {
  const joined = text.replace(/=\r?\n/g, '');
  const bytes = [];
  for (let i = 0; i < joined.length; i += 1) {
    const hex = joined.slice(i + 1, i + 3);
    if (joined[i] === '=' && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(joined[i], 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Every text part of a message, decoded (multipart, quoted-printable, base64). */
export function mailText(raw) {
  const { headers, body } = splitPart(raw);
  const type = headers['content-type'] ?? 'text/plain';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (/^multipart\//i.test(type) && boundary) {
    return body
      .split(`--${boundary}`)
      .slice(1)
      .filter((part) => !part.startsWith('--'))
      .map((part) => mailText(part.replace(/^\r?\n/, '')))
      .join('\n');
  }
  const encoding = (headers['content-transfer-encoding'] ?? '').toLowerCase();
  if (encoding === 'quoted-printable') return decodeQuotedPrintable(body);
  if (encoding === 'base64') return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  return body;
}

/** The mails (headers, decoded text, arrival time) sent to `to`, oldest first. */
export function mailsTo(to) {
  const found = [];
  for (const dir of MAIL_DIRS) {
    let names = [];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.eml'));
    } catch {
      continue; // not created until the first mail
    }
    for (const name of names) {
      const path = join(dir, name);
      const raw = readFileSync(path, 'utf8');
      const { headers } = splitPart(raw);
      if (!(headers.to ?? '').toLowerCase().includes(to.toLowerCase())) continue;
      found.push({ path, subject: headers.subject ?? '', text: mailText(raw), at: statSync(path).mtimeMs });
    }
  }
  return found.sort((a, b) => a.at - b.at || a.path.localeCompare(b.path));
}

/** The `{base}{path}?token=…` links in a mail's text (HTML entities undone). */
export function linksIn(text, path) {
  const re = new RegExp(`https?://[^\\s"'<>]+${path.replace(/[/?]/g, '\\$&')}\\?token=[^\\s"'<>]+`, 'g');
  return [...new Set((text.match(re) ?? []).map((l) => l.replace(/&amp;/g, '&')))];
}

/**
 * Wait until at least `count` mails to `to` hold a link to `path` (mail is
 * sent by a background job), and return the newest such link.
 */
export async function waitForMailLink(to, path, { count = 1, timeoutMs = 30_000 } = {}) {
  if (!MAIL_DIRS.length) throw new Error('E2E_MAIL_DIR is not set: the test cannot read the mails the server sent');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const withLink = mailsTo(to).filter((m) => linksIn(m.text, path).length);
    if (withLink.length >= count) {
      const newest = withLink[withLink.length - 1];
      return { link: linksIn(newest.text, path)[0], mail: newest, mails: withLink };
    }
    if (Date.now() > deadline) {
      const all = mailsTo(to).map((m) => `${m.path}: ${m.subject}`);
      throw new Error(`no ${count} mail(s) to ${to} with a ${path} link after ${timeoutMs} ms in ${MAIL_DIRS}; found ${JSON.stringify(all)}`);
    }
    await sleep(250);
  }
}

function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.replace(/[\s=-]/g, '').toUpperCase();
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const v = alphabet.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${ch}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** TOTP parameters from an otpauth:// URI (RFC 6238 defaults: SHA1, 6 digits, 30 s). */
export function totpParams(otpauthUrl) {
  const url = new URL(otpauthUrl);
  return {
    secret: url.searchParams.get('secret') ?? '',
    algorithm: (url.searchParams.get('algorithm') ?? 'SHA1').toLowerCase(),
    digits: Number(url.searchParams.get('digits') ?? 6),
    period: Number(url.searchParams.get('period') ?? 30),
  };
}

/** The time step a moment falls in. */
export function totpStep(period = 30, now = Date.now()) {
  return Math.floor(now / 1000 / period);
}

/** The code of one time step (RFC 6238 over RFC 4226's HOTP). */
export function totpCode(secret, { step = totpStep(), algorithm = 'sha1', digits = 6 } = {}) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac(algorithm, base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const binary = (mac.readUInt32BE(offset) & 0x7fffffff) % 10 ** digits;
  return String(binary).padStart(digits, '0');
}
