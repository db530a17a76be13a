//! Signatures on the wire: [Standard Webhooks] (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`), and for one release the legacy `Reelhouse-Webhook-*`
//! headers beside them (`webhooks.legacy_headers`).
//!
//! **Standard Webhooks.** `webhook-signature: v1,<base64 HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")>` where `key` is the base64 decoding of the secret
//! after its `whsec_` prefix, which is what the official verifier libraries do
//! with the secret string they are given.
//!
//! **Secrets.** New ones are `whsec_` and 32 random bytes in padded standard
//! base64 (the spec allows 24 to 64 bytes). Secrets issued before are `whsec_` and
//! 64 hex digits; 64 hex digits are also valid base64 (of 48 bytes), so the
//! official libraries, given such a secret unchanged, derive those 48 bytes as the
//! key, and so does the server: nobody has to rotate a secret.
//!
//! **Legacy headers** (`Reelhouse-Webhook-Id`, `-Timestamp`, and `-Signature: v1=<hex
//! HMAC-SHA256(the whole secret string, "{timestamp}.{body}")>`): unchanged from the
//! previous release, so receivers written against them keep verifying while they
//! move to the standard headers; they go away in the next release.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the delivery (idempotency) id.
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying the unix time of the attempt, in seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Legacy header with the delivery id (until the next release).
pub const LEGACY_ID_HEADER: &str = "Reelhouse-Webhook-Id";
/// Legacy header with the unix time of the attempt (until the next release).
pub const LEGACY_TIMESTAMP_HEADER: &str = "Reelhouse-Webhook-Timestamp";
/// Legacy header with `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>` (until the next release).
pub const LEGACY_SIGNATURE_HEADER: &str = "Reelhouse-Webhook-Signature";

/// Seconds a receiver should accept a timestamp for (the verifier libraries' tolerance).
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// Prefix of every endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret.
pub const SECRET_BYTES: usize = 32;

/// Base64 as the verifier libraries read it: the standard alphabet, padding optional.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the endpoint secret is not `whsec_` followed by base64")]
    NotBase64,
    #[error("the endpoint secret is empty")]
    Empty,
}

/// A new endpoint secret: `whsec_` and [`SECRET_BYTES`] random bytes in base64.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The HMAC key of a secret under Standard Webhooks: the base64 after `whsec_`.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, SigningError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = LENIENT_BASE64.decode(encoded).map_err(|_| SigningError::NotBase64)?;
    if key.is_empty() {
        return Err(SigningError::Empty);
    }
    Ok(key)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return Vec::new() };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign_standard(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// Legacy: `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`, the whole secret
/// string (prefix included) being the key.
pub fn sign_legacy(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", body]);
    format!("v1={}", hex::encode(mac))
}

/// Every signature header of one attempt: the standard three, then (with
/// `legacy`) the three `Reelhouse-Webhook-*` ones.
pub fn signature_headers(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    legacy: bool,
) -> Result<Vec<(&'static str, String)>, SigningError> {
    let key = standard_key(secret)?;
    let mut headers = vec![
        (ID_HEADER, id.to_string()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, sign_standard(&key, id, timestamp, body)),
    ];
    if legacy {
        headers.extend([
            (LEGACY_ID_HEADER, id.to_string()),
            (LEGACY_TIMESTAMP_HEADER, timestamp.to_string()),
            (LEGACY_SIGNATURE_HEADER, sign_legacy(secret, timestamp, body)),
        ]);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_signature_matches_the_reference_implementation() {
        // python3 -c 'from standardwebhooks import Webhook; from datetime import datetime, timezone;
        //   print(Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign("msg_p5jXN8AQM9LWM0D4loKWxJek",
        //   datetime.fromtimestamp(1614265330, tz=timezone.utc), "{\"test\": 2432232314}"))'
        // (the example of the Standard Webhooks libraries' own tests)
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign_standard(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn legacy_signature_is_hex_hmac_of_timestamp_dot_body() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'whsec_test', b'1700000000.{}', hashlib.sha256).hexdigest())"
        let sig = sign_legacy("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(sig, "v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91");
        assert_ne!(sig, sign_legacy("whsec_test", 1_700_000_001, b"{}"));
    }

    #[test]
    fn new_secrets_are_base64_of_32_bytes_and_old_hex_secrets_still_decode() {
        let secret = new_secret();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(standard_key(&secret).unwrap().len(), SECRET_BYTES);
        assert_ne!(secret, new_secret());
        // The previous release's secrets: 64 hex digits read as base64, 48 bytes.
        let old = format!("whsec_{}", "0123456789abcdef".repeat(4));
        assert_eq!(standard_key(&old).unwrap().len(), 48);
        assert!(matches!(standard_key("whsec_not base64!"), Err(SigningError::NotBase64)));
        assert!(matches!(standard_key("whsec_"), Err(SigningError::Empty)));
    }

    #[test]
    fn legacy_headers_follow_the_setting() {
        let secret = new_secret();
        let names = |legacy| -> Vec<&str> {
            signature_headers(&secret, "id", 1, b"{}", legacy).unwrap().into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(names(false), [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER]);
        assert_eq!(names(true).len(), 6);
    }
}
