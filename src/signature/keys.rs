//! Signing keys: each provider's PKCS#8 key and certificate chain, used to sign result documents
//! in the `jcs-x509` format so that anyone can verify them offline.
//!
//! Keys live in a directory as `<BIN>.key.pem` (PKCS#8) with `<BIN>.chain.pem` (the certificate
//! and its intermediates); `default.key.pem`/`default.chain.pem` signs for providers without a
//! key of their own. Key files must not be readable by others: loading refuses otherwise, so a
//! misconfigured install does not start. Keys are never logged.

use std::collections::HashMap;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value, json};

use super::x509::{ConfigError, read_certificates};
use super::{FORMAT, Signer, b64encode, signed_bytes};

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key with its certificate chain.
pub struct SigningKey {
    pair: Pair,
    chain: Vec<String>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("algorithm", &self.algorithm()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The BIN the signing certificate names (`OU=BIN…`), if any.
    pub fn certificate_bin(&self) -> Option<String> {
        let der = crate::signature::b64decode(self.chain.first()?).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        crate::signature::x509::certificate_identifiers(&cert).1
    }

    /// From a PKCS#8 PEM key (ECDSA P-256 or RSA) and the PEM chain (signer first).
    pub fn from_pem(key_pem: &[u8], chain_pem_path: &Path) -> Result<SigningKey, ConfigError> {
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem)
            .map_err(|_| ConfigError("not a PKCS#8 PEM private key".into()))?;
        let rng = SystemRandom::new();
        let pair = match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.secret_pkcs8_der(), &rng) {
            Ok(k) => Pair::Ecdsa(k),
            Err(_) => Pair::Rsa(
                RsaKeyPair::from_pkcs8(key.secret_pkcs8_der())
                    .map_err(|_| ConfigError("the key is neither ECDSA P-256 nor RSA".into()))?,
            ),
        };
        let chain = read_certificates(chain_pem_path)?.iter().map(|c| b64encode(c.as_ref())).collect();
        Ok(SigningKey { pair, chain, rng })
    }

    /// `ES256` or `RS256`.
    pub fn algorithm(&self) -> &'static str {
        match self.pair {
            Pair::Ecdsa(_) => "ES256",
            Pair::Rsa(_) => "RS256",
        }
    }

    /// The `signature` member for a JSON object (its own `signature` member is ignored).
    pub fn signature_for(&self, message: &Map<String, Value>) -> Result<Value, String> {
        let bytes = signed_bytes(message).map_err(|e| e.to_string())?;
        let value = match &self.pair {
            Pair::Ecdsa(k) => {
                k.sign(&self.rng, &bytes).map_err(|_| "ECDSA signing failed".to_owned())?.as_ref().to_vec()
            }
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &self.rng, &bytes, &mut sig).map_err(|_| "RSA signing failed".to_owned())?;
                sig
            }
        };
        Ok(json!({
            "format": FORMAT,
            "algorithm": self.algorithm(),
            "certificate_chain": self.chain,
            "value": b64encode(&value),
        }))
    }

    /// Signs a JSON object in place (sets its `signature` member).
    pub fn sign_in_place(&self, message: &mut Map<String, Value>) -> Result<(), String> {
        let sig = self.signature_for(message)?;
        message.insert("signature".into(), sig);
        Ok(())
    }
}

/// Refuses key files that others can read.
pub fn check_key_permissions(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o004 != 0 {
            return Err(ConfigError(format!(
                "{} is readable by every user (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    Ok(())
}

/// Loads one key and its chain (`<stem>.key.pem`, `<stem>.chain.pem`), checking permissions.
pub fn load_key(dir: &Path, stem: &str) -> Result<SigningKey, ConfigError> {
    let key_path = dir.join(format!("{stem}.key.pem"));
    check_key_permissions(&key_path)?;
    let pem = std::fs::read(&key_path).map_err(|e| ConfigError(format!("cannot read {}: {e}", key_path.display())))?;
    SigningKey::from_pem(&pem, &dir.join(format!("{stem}.chain.pem")))
        .map_err(|e| ConfigError(format!("{}: {e}", key_path.display())))
}

/// The providers' signing keys.
#[derive(Default)]
pub struct Keyring {
    keys: HashMap<String, SigningKey>,
}

impl Keyring {
    /// Loads every `*.key.pem` of a directory.
    pub fn load(dir: &Path) -> Result<Keyring, ConfigError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ConfigError(format!("cannot read {}: {e}", dir.display())))?;
        let mut keys = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".key.pem") {
                keys.insert(stem.to_owned(), load_key(dir, stem)?);
            }
        }
        if keys.is_empty() {
            return Err(ConfigError(format!("{}: no *.key.pem signing key", dir.display())));
        }
        tracing::info!(count = keys.len(), "signing keys loaded");
        Ok(Keyring { keys })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Signer for Keyring {
    fn sign(&self, provider: &str, document: &Map<String, Value>) -> Result<Value, String> {
        let key = self.keys.get(provider).or_else(|| self.keys.get("default")).ok_or_else(|| {
            format!("no signing key for provider {} and no default key", crate::ident::mask(provider))
        })?;
        key.signature_for(document)
    }

    fn can_sign(&self, provider: &str) -> bool {
        self.keys.contains_key(provider) || self.keys.contains_key("default")
    }
}

impl Keyring {
    /// The BIN named by the certificate of the `default` key, which signs for providers without
    /// a key of their own; `Ok(None)` without a default key.
    pub fn default_signer_bin(&self) -> Result<Option<String>, ConfigError> {
        match self.keys.get("default") {
            None => Ok(None),
            Some(k) => k
                .certificate_bin()
                .map(Some)
                .ok_or_else(|| ConfigError("the default key's certificate names no BIN (OU=BIN…)".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Verifier as _;

    #[test]
    fn world_readable_keys_are_refused_at_start_up() {
        let dir = std::env::temp_dir().join(format!("qyzmet-keys-{}", uuid::Uuid::new_v4().simple()));
        let paths = qyzmet_demo_pki::generate(
            &dir,
            &[],
            &qyzmet_demo_pki::demo_provider_keys()[..1],
            chrono::Utc::now() + chrono::Duration::days(1),
        )
        .expect("pki");
        assert_eq!(Keyring::load(&paths.keys_dir).expect("0600 keys load").len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = paths.keys_dir.join("051140000113.key.pem");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let err = Keyring::load(&paths.keys_dir).err().expect("refused");
            assert!(err.to_string().contains("readable by every user"), "{err}");
        }
    }

    #[test]
    fn documents_signed_here_verify_offline() {
        let dir = std::env::temp_dir().join(format!("qyzmet-sign-{}", uuid::Uuid::new_v4().simple()));
        let paths = qyzmet_demo_pki::generate(
            &dir,
            &[],
            &qyzmet_demo_pki::demo_provider_keys(),
            chrono::Utc::now() + chrono::Duration::days(1),
        )
        .expect("pki");
        let ring = Keyring::load(&paths.keys_dir).expect("keys");
        let verifier =
            crate::signature::x509::X509Verifier::new(&paths.trust_bundle, Some(paths.crl_dir.clone()), vec![])
                .expect("verifier");
        for (provider, alg) in [("051140000113", "ES256"), ("030940000443", "RS256"), ("999999999999", "ES256")] {
            let mut doc: Map<String, Value> = serde_json::from_value(
                json!({ "kind": "x", "number": "LIC-2026-000001", "content": { "provider": provider } }),
            )
            .expect("doc");
            let sig = ring.sign(provider, &doc).expect("signed");
            assert_eq!(sig["algorithm"], alg, "{provider}");
            doc.insert("signature".into(), sig.clone());
            let block: crate::contract::SignatureBlock = serde_json::from_value(sig).expect("block");
            let signer_bin = if provider == "999999999999" { "090840000556" } else { provider };
            let expected = crate::signature::ExpectedSigner {
                role: "provider",
                identifiers: &[crate::regulations::IdKind::Bin],
                subjects: vec![crate::ident::Identifier::Bin(signer_bin.into())],
                signed_at: chrono::Utc::now(),
            };
            assert_eq!(verifier.verify(&doc, &block, &expected), Ok(()), "{provider}");
        }
    }
}
