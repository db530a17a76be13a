//! The account mails: subject, plain-text and HTML bodies. Everything a user chose
//! (display name, addresses) is HTML-escaped in the HTML body; links are built by
//! the server from its public URL and a URL-safe token.

/// A rendered mail, addressed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Which template made it (shown in the job's payload, never the content).
    pub template: String,
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Control characters (a display name may hold anything) become spaces in the
/// plain-text body, so a name cannot forge lines of the mail.
fn plain(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn html_page(greeting: &str, paragraphs: &[String], link: Option<(&str, &str)>) -> String {
    let mut body = format!("<p>{}</p>\n", greeting);
    for p in paragraphs {
        body.push_str(&format!("<p>{p}</p>\n"));
    }
    if let Some((label, url)) = link {
        let url = escape_html(url);
        body.push_str(&format!("<p><a href=\"{url}\">{}</a></p>\n<p>{url}</p>\n", escape_html(label)));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n{body}<p>— reelhouse</p>\n</body></html>\n"
    )
}

fn greeting_html(name: &str) -> String {
    format!("Hello {},", escape_html(name))
}

fn greeting_text(name: &str) -> String {
    format!("Hello {},", plain(name))
}

fn hours(secs: u64) -> String {
    match secs {
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// Sent on sign-up and by `resendVerification`.
pub fn verify_email(to: &str, name: &str, link: &str, ttl_secs: u64) -> OutgoingMail {
    let lines = [format!("please confirm that {to} is your address by opening this link within {}:", hours(ttl_secs))];
    OutgoingMail {
        to: to.to_string(),
        subject: "Confirm your email address".into(),
        text: format!(
            "{}\n\n{}\n\n{link}\n\nIf you did not sign up for reelhouse, ignore this mail.\n\n— reelhouse\n",
            greeting_text(name),
            lines[0]
        ),
        html: html_page(
            &greeting_html(name),
            &[escape_html(&lines[0]), "If you did not sign up for reelhouse, ignore this mail.".into()],
            Some(("Confirm my address", link)),
        ),
        template: "VERIFY_EMAIL".into(),
    }
}

/// Sent to the new address by `changeEmail`.
pub fn confirm_new_email(to: &str, name: &str, link: &str, ttl_secs: u64) -> OutgoingMail {
    let line = format!(
        "your reelhouse account asked to use {to} from now on. Open this link within {} to confirm:",
        hours(ttl_secs)
    );
    OutgoingMail {
        to: to.to_string(),
        subject: "Confirm your new email address".into(),
        text: format!(
            "{}\n\n{line}\n\n{link}\n\nIf you did not ask for this, ignore this mail.\n\n— reelhouse\n",
            greeting_text(name)
        ),
        html: html_page(
            &greeting_html(name),
            &[escape_html(&line), "If you did not ask for this, ignore this mail.".into()],
            Some(("Confirm my new address", link)),
        ),
        template: "CONFIRM_NEW_EMAIL".into(),
    }
}

/// Sent to the old address by `changeEmail`.
pub fn email_change_notice(to: &str, name: &str, new_email: &str) -> OutgoingMail {
    let line = format!(
        "someone signed in to your reelhouse account asked to change its address to {new_email}. \
         Nothing changes until that address is confirmed."
    );
    let warn = "If this was not you, change your password now.";
    OutgoingMail {
        to: to.to_string(),
        subject: "Your email address is being changed".into(),
        text: format!("{}\n\n{}\n\n{warn}\n\n— reelhouse\n", greeting_text(name), plain(&line)),
        html: html_page(&greeting_html(name), &[escape_html(&line), warn.into()], None),
        template: "EMAIL_CHANGE_NOTICE".into(),
    }
}

/// Sent by `requestPasswordReset` to an account that exists.
pub fn password_reset(to: &str, name: &str, link: &str, ttl_secs: u64) -> OutgoingMail {
    let line = format!(
        "someone asked to reset your reelhouse password. Open this link within {} to choose a new one:",
        hours(ttl_secs)
    );
    let warn = "If you did not ask for this, ignore this mail: your password stays as it is.";
    OutgoingMail {
        to: to.to_string(),
        subject: "Reset your password".into(),
        text: format!("{}\n\n{line}\n\n{link}\n\n{warn}\n\n— reelhouse\n", greeting_text(name)),
        html: html_page(
            &greeting_html(name),
            &[escape_html(&line), warn.into()],
            Some(("Choose a new password", link)),
        ),
        template: "PASSWORD_RESET".into(),
    }
}

/// Sent after `resetPassword` and `changePassword`.
pub fn password_changed_notice(to: &str, name: &str, signed_out: &str) -> OutgoingMail {
    let line = format!("the password of your reelhouse account was changed; {signed_out}");
    let warn = "If this was not you, reset your password at once and tell your administrator.";
    OutgoingMail {
        to: to.to_string(),
        subject: "Your password was changed".into(),
        text: format!("{}\n\n{line}\n\n{warn}\n\n— reelhouse\n", greeting_text(name)),
        html: html_page(&greeting_html(name), &[escape_html(&line), warn.into()], None),
        template: "PASSWORD_CHANGED".into(),
    }
}

/// Sent to the owner of an address someone tried to sign up with (`register` for an
/// existing account that did not sign in). Links to the page that asks for a reset
/// link, so a stranger's sign-up mints no token.
pub fn signup_attempt_notice(to: &str, name: &str, forgot_password_link: &str) -> OutgoingMail {
    let line = format!(
        "someone tried to create a reelhouse account with {to}, which already has one: yours. \
         Nothing about your account changed."
    );
    let hint = "If it was you and you forgot your password, you can reset it here:";
    let warn = "If it was not you, you need not do anything.";
    OutgoingMail {
        to: to.to_string(),
        subject: "Someone tried to sign up with your address".into(),
        text: format!(
            "{}\n\n{}\n\n{hint}\n\n{forgot_password_link}\n\n{warn}\n\n— reelhouse\n",
            greeting_text(name),
            plain(&line)
        ),
        html: html_page(
            &greeting_html(name),
            &[escape_html(&line), hint.into(), warn.into()],
            Some(("Reset my password", forgot_password_link)),
        ),
        template: "SIGNUP_ATTEMPT".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_escaped_in_html_and_flattened_in_text() {
        let mail =
            verify_email("a@example.com", "<b>Eve</b> & \"co\"\r\nBcc: x", "http://h/verify-email?token=t", 3600);
        assert!(mail.html.contains("&lt;b&gt;Eve&lt;/b&gt; &amp; &quot;co&quot;"), "{}", mail.html);
        assert!(!mail.html.contains("<b>Eve"), "{}", mail.html);
        assert!(mail.text.contains("Hello <b>Eve</b> & \"co\"  Bcc: x,"), "{}", mail.text);
        assert!(mail.text.contains("http://h/verify-email?token=t"));
        assert!(mail.html.contains("href=\"http://h/verify-email?token=t\""));
    }
}
