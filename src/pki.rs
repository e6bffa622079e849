//! Certificates, made in-process with rcgen (no openssl): a CA, server and
//! client certificates it signs, and loading a CA back from PEM so later
//! runs keep signing with the same one. Knows nothing of Nautes; private
//! keys only ever leave as [`Secret`]s.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secret::Secret;

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    /// TLS server (serverAuth).
    Server,
    /// TLS client, for mTLS (clientAuth).
    Client,
}

/// A certificate to issue: its subject and names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRequest {
    pub common_name: String,
    /// DNS names (wildcards allowed) and IP addresses.
    pub sans: Vec<String>,
    pub usage: Usage,
}

/// A freshly issued certificate and its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Secret,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: u64,
}

/// Valid from an hour ago (clocks differ) for `validity`.
fn window(params: &mut CertificateParams, validity: Duration) -> u64 {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    let validity = time::Duration::seconds(validity.as_secs().min(i64::MAX as u64) as i64);
    params.not_after = now + validity;
    params.not_after.unix_timestamp().max(0) as u64
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Nautes");
    dn
}

/// An IP address, or a DNS name (a leading `*.` allowed) of letters,
/// digits and hyphens: what TLS clients will match.
fn is_valid_san(san: &str) -> bool {
    if san.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = san.strip_prefix("*.").unwrap_or(san);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A CA that can sign; built new or loaded from PEM.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl Ca {
    /// A new self-signed CA (P-256 key) valid for `validity`.
    pub fn generate(common_name: &str, validity: Duration) -> Result<(Ca, Issued), String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot generate the CA key: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let not_after = window(&mut params, validity);
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the CA: {e}"))?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: Secret::new(key.serialize_pem()),
            not_after,
        };
        let ca = Ca::load(&issued.cert_pem, &issued.key_pem)?;
        Ok((ca, issued))
    }

    /// A CA from its certificate and private key (PKCS#8 PEM). `what` names
    /// where they came from in errors.
    pub fn load(cert_pem: &str, key_pem: &Secret) -> Result<Ca, String> {
        let key = KeyPair::from_pem(key_pem.expose())
            .map_err(|e| format!("the CA key is not a usable PKCS#8 PEM private key: {e}"))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// Sign a new leaf certificate with a new key.
    pub fn issue(&self, request: &LeafRequest, validity: Duration) -> Result<Issued, String> {
        if let Some(bad) = request.sans.iter().find(|s| !is_valid_san(s)) {
            return Err(format!(
                "certificate {}: `{bad}` is neither an IP address nor a DNS name",
                request.common_name
            ));
        }
        let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::new(request.sans.clone())
            .map_err(|e| format!("certificate {}: bad subject alternative name: {e}", request.common_name))?;
        params.distinguished_name = subject(&request.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![match request.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let not_after = window(&mut params, validity);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign certificate {}: {e}", request.common_name))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Secret::new(key.serialize_pem()),
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_ca_signs_like_the_generated_one() {
        let (_, issued) = Ca::generate("test CA", Duration::from_secs(3600)).expect("CA");
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.not_after > crate::util::unix_now());
        let ca = Ca::load(&issued.cert_pem, &issued.key_pem).expect("load");
        let leaf = ca
            .issue(
                &LeafRequest {
                    common_name: "vault".into(),
                    sans: vec!["vault.example.com".into(), "10.0.0.5".into()],
                    usage: Usage::Server,
                },
                Duration::from_secs(600),
            )
            .expect("leaf");
        assert!(leaf.key_pem.expose().contains("PRIVATE KEY"));
        assert!(format!("{:?}", leaf.key_pem).contains("redacted"));
    }

    #[test]
    fn a_bad_key_or_name_is_an_error_not_a_panic() {
        assert!(Ca::load("not a cert", &Secret::new("not a key")).is_err());
        let (ca, _) = Ca::generate("t", Duration::from_secs(60)).unwrap();
        let bad = LeafRequest {
            common_name: "x".into(),
            sans: vec!["bad name with spaces".into()],
            usage: Usage::Client,
        };
        assert!(ca.issue(&bad, Duration::from_secs(60)).is_err());
    }
}
