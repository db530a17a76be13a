//! JWT access tokens: signing with the current key, verifying with any configured key.
//!
//! The algorithm is pinned by the server (HS256): a token whose header names any other
//! algorithm — `none` included — is refused before its signature is looked at. Every
//! key has a `kid` (the first 8 bytes of the SHA-256 of the key, in hex); the current
//! key signs, `auth.previous_jwt_secrets` only verify, so keys rotate without a mass
//! logout. A token whose `kid` is unknown is refused, so removing a secret from the
//! settings retires every token it signed.

use std::collections::HashMap;

use chrono::Utc;
use entities::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{AuthSettings, JwtAlgorithm};
use crate::error::AppError;

/// Leeway for clock skew between replicas when checking `exp` and `nbf`.
const CLOCK_LEEWAY_SECS: u64 = 5;

/// Only access tokens are JWTs; this marks them so no other JWT we might sign later
/// (e.g. signed URLs) is accepted as one.
const ACCESS_TOKEN_TYPE: &str = "access";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub role: Role,
    /// The refresh-token family (session) this token belongs to; revoking the
    /// family refuses its access tokens on the next request.
    pub sid: Uuid,
    pub typ: String,
}

/// Why a token was refused. Clients all see the same `UNAUTHENTICATED`; the reason is logged.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token header: {0}")]
    MalformedHeader(jsonwebtoken::errors::Error),
    #[error("token algorithm {0:?} is not the configured one")]
    WrongAlgorithm(Algorithm),
    #[error("token has no kid")]
    MissingKid,
    #[error("token kid {0} is not a configured key")]
    UnknownKid(String),
    #[error("token rejected: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("token is not an access token")]
    WrongType,
    #[error("token subject is not a user id")]
    BadSubject,
}

/// A freshly signed access token.
pub struct IssuedAccessToken {
    pub token: String,
    pub expires_in_secs: i64,
}

/// The signing key and every verification key, built once from the settings.
pub struct TokenKeys {
    algorithm: Algorithm,
    signing_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    issuer: String,
    audience: String,
    access_ttl_secs: i64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.algorithm)
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

pub use crate::keys::sealed::key_id;

pub use crate::keys::derive_jwt_key;

impl TokenKeys {
    /// `current_key` is `ServerKeys::jwt` (derived from `auth.jwt_secret`); the
    /// previous master secrets in `auth.previous_jwt_secrets` are derived the same way.
    /// With `EdDSA`/`RS256` the PEM keys in the settings are used instead, each
    /// public key's `kid` being the hash of its PEM text.
    pub fn new(settings: &AuthSettings, current_key: &[u8]) -> Result<Self, AppError> {
        let (algorithm, signing_kid, encoding, decoding) = match settings.algorithm {
            JwtAlgorithm::HS256 => {
                let mut decoding = HashMap::new();
                for previous in &settings.previous_jwt_secrets {
                    let key = derive_jwt_key(previous.expose().as_bytes());
                    decoding.insert(key_id(&key), DecodingKey::from_secret(&key));
                }
                let signing_kid = key_id(current_key);
                decoding.insert(signing_kid.clone(), DecodingKey::from_secret(current_key));
                (Algorithm::HS256, signing_kid, EncodingKey::from_secret(current_key), decoding)
            }
            JwtAlgorithm::EdDSA | JwtAlgorithm::RS256 => {
                let ed = settings.algorithm == JwtAlgorithm::EdDSA;
                let bad = |what: &str| {
                    AppError::new(
                        crate::error::ErrorCode::Internal,
                        format!("auth.{what} is not a valid PEM key for {:?}", settings.algorithm),
                    )
                };
                let private = settings.signing_key_pem.as_ref().ok_or_else(|| bad("signing_key_pem"))?;
                let encoding = if ed {
                    EncodingKey::from_ed_pem(private.expose().as_bytes())
                } else {
                    EncodingKey::from_rsa_pem(private.expose().as_bytes())
                }
                .map_err(|_| bad("signing_key_pem"))?;
                let mut decoding = HashMap::new();
                let mut first = None;
                for pem in &settings.verification_keys_pem {
                    let key = if ed {
                        DecodingKey::from_ed_pem(pem.as_bytes())
                    } else {
                        DecodingKey::from_rsa_pem(pem.as_bytes())
                    }
                    .map_err(|_| bad("verification_keys_pem"))?;
                    let kid = key_id(pem.trim().as_bytes());
                    first.get_or_insert_with(|| kid.clone());
                    decoding.insert(kid, key);
                }
                let signing_kid = first.ok_or_else(|| bad("verification_keys_pem"))?;
                (if ed { Algorithm::EdDSA } else { Algorithm::RS256 }, signing_kid, encoding, decoding)
            }
        };
        let keys = Self {
            algorithm,
            signing_kid,
            encoding,
            decoding,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl_secs: i64::try_from(settings.access_token_ttl_secs).unwrap_or(i64::MAX / 2),
        };
        // Refuse to start with a signing key whose tokens would not verify (e.g. the
        // public keys listed in the wrong order during a rotation).
        let probe = keys.issue_access_token(Uuid::nil(), Role::Viewer, Uuid::nil())?;
        keys.verify_access_token(&probe.token).map_err(|_| {
            AppError::new(
                crate::error::ErrorCode::Internal,
                "auth: tokens signed with the signing key do not verify; list its public key first in auth.verification_keys_pem",
            )
        })?;
        Ok(keys)
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    pub fn issue_access_token(
        &self,
        user_id: Uuid,
        role: Role,
        session_id: Uuid,
    ) -> Result<IssuedAccessToken, AppError> {
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            exp: now.saturating_add(self.access_ttl_secs),
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            role,
            sid: session_id,
            typ: ACCESS_TOKEN_TYPE.into(),
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.signing_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AppError::internal(anyhow::anyhow!("signing an access token: {e}")))?;
        Ok(IssuedAccessToken { token, expires_in_secs: self.access_ttl_secs })
    }

    /// Check header, signature and claims; returns the claims and the user id.
    pub fn verify_access_token(&self, token: &str) -> Result<(AccessClaims, Uuid), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::MalformedHeader)?;
        if header.alg != self.algorithm {
            return Err(TokenError::WrongAlgorithm(header.alg));
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let key = self.decoding.get(&kid).ok_or(TokenError::UnknownKid(kid))?;
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map_err(TokenError::Invalid)?;
        if data.claims.typ != ACCESS_TOKEN_TYPE {
            return Err(TokenError::WrongType);
        }
        let user_id = Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::BadSubject)?;
        Ok((data.claims, user_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn previous_keys_verify_and_unknown_kids_are_refused() {
        let old_master = "old-master-secret-old-master-secret";
        let mut settings = AuthSettings::default();
        let old = TokenKeys::new(&settings, &derive_jwt_key(old_master.as_bytes())).unwrap();
        let issued = old.issue_access_token(Uuid::now_v7(), Role::User, Uuid::now_v7()).unwrap();

        settings.previous_jwt_secrets = vec![Secret::new(old_master)];
        let rotated = TokenKeys::new(&settings, &derive_jwt_key(b"new-master-secret-new-master-secret")).unwrap();
        assert!(rotated.verify_access_token(&issued.token).is_ok());

        settings.previous_jwt_secrets.clear();
        let retired = TokenKeys::new(&settings, &derive_jwt_key(b"new-master-secret-new-master-secret")).unwrap();
        assert!(matches!(retired.verify_access_token(&issued.token), Err(TokenError::UnknownKid(_))));
    }

    /// CVE-2026-25537 (jsonwebtoken < 10.3): a time claim of the wrong JSON type was
    /// treated as absent, so `validate_nbf` was skipped unless the claim was also listed
    /// as required. Our validation lists it, but the library must refuse on its own.
    #[test]
    fn a_string_nbf_is_refused_even_when_not_required() {
        let key = b"cve-2026-25537-cve-2026-25537-cve";
        let claims = serde_json::json!({ "sub": "x", "nbf": "99999999999", "exp": Utc::now().timestamp() + 600 });
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key)).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, &DecodingKey::from_secret(key), &validation);
        assert!(decoded.is_err(), "a malformed nbf must not be skipped");
    }

    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGiNGDT+9uaoIEx35DCC42bwNn3Wycp3QOPkEP8x91fD\n-----END PRIVATE KEY-----\n";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEABT6BPA2s5ItQ0Z7YSPuqoWRzoOjx68sLbyuBPSilTeA=\n-----END PUBLIC KEY-----\n";
    const ED2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEvYwiLBCaDwPS7gleyhxSzvkCMecOr/7A1dP98rvFoZ\n-----END PRIVATE KEY-----\n";
    const ED2_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAJzy2YcObk9fRveNOpcaA87HdK95AhIsSA7T7iYLYkGw=\n-----END PUBLIC KEY-----\n";

    fn eddsa(private: &str, publics: &[&str]) -> TokenKeys {
        let settings = AuthSettings {
            algorithm: JwtAlgorithm::EdDSA,
            signing_key_pem: Some(Secret::new(private)),
            verification_keys_pem: publics.iter().map(|p| p.to_string()).collect(),
            ..AuthSettings::default()
        };
        TokenKeys::new(&settings, b"unused for EdDSA").unwrap()
    }

    #[test]
    fn eddsa_tokens_sign_verify_and_rotate() {
        let first = eddsa(ED_PRIVATE, &[ED_PUBLIC]);
        let issued = first.issue_access_token(Uuid::now_v7(), Role::User, Uuid::now_v7()).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert!(first.verify_access_token(&issued.token).is_ok());

        // The new key signs; the old public key still verifies until it is removed.
        let rotated = eddsa(ED2_PRIVATE, &[ED2_PUBLIC, ED_PUBLIC]);
        assert!(rotated.verify_access_token(&issued.token).is_ok());
        let fresh = rotated.issue_access_token(Uuid::now_v7(), Role::User, Uuid::now_v7()).unwrap();
        assert!(rotated.verify_access_token(&fresh.token).is_ok());
        assert!(matches!(first.verify_access_token(&fresh.token), Err(TokenError::UnknownKid(_))));
        let retired = eddsa(ED2_PRIVATE, &[ED2_PUBLIC]);
        assert!(matches!(retired.verify_access_token(&issued.token), Err(TokenError::UnknownKid(_))));
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused_under_eddsa() {
        let keys = eddsa(ED_PRIVATE, &[ED_PUBLIC]);
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            iss: "reelhouse".into(),
            aud: "reelhouse".into(),
            sub: Uuid::now_v7().to_string(),
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: "x".into(),
            role: Role::Admin,
            sid: Uuid::now_v7(),
            typ: ACCESS_TOKEN_TYPE.into(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.signing_kid().to_string());
        let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(ED_PUBLIC.as_bytes())).unwrap();
        assert!(matches!(keys.verify_access_token(&forged), Err(TokenError::WrongAlgorithm(Algorithm::HS256))));
    }

    #[test]
    fn a_signing_key_that_does_not_match_the_first_public_key_is_refused() {
        let settings = AuthSettings {
            algorithm: JwtAlgorithm::EdDSA,
            signing_key_pem: Some(Secret::new(ED2_PRIVATE)),
            verification_keys_pem: vec![ED_PUBLIC.into(), ED2_PUBLIC.into()],
            ..AuthSettings::default()
        };
        assert!(TokenKeys::new(&settings, b"x").is_err());
    }

    #[test]
    fn a_malformed_pem_key_is_a_startup_error() {
        let settings = AuthSettings {
            algorithm: JwtAlgorithm::EdDSA,
            signing_key_pem: Some(Secret::new("not a key")),
            verification_keys_pem: vec![ED_PUBLIC.into()],
            ..AuthSettings::default()
        };
        assert!(TokenKeys::new(&settings, b"x").is_err());
    }
}
