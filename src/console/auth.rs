//! Who may use the console and the status API, and as what.
//!
//! Accounts and tokens come from the operators file (`QYZMET_OPERATORS_FILE`):
//!
//! ```toml
//! [[operator]]
//! name = "aigerim"
//! role = "operator"                 # or "viewer": reads, never replays or discards
//! password_hash = "$argon2id$v=19$…" # `qyzmet operators hash-password`
//!
//! [[token]]                          # for systems calling the status API (P-41, P-42)
//! name = "astana-con"
//! role = "viewer"
//! sha256 = "9f86d0…"                 # `qyzmet operators new-token` prints a token and this
//! ```
//!
//! People sign in with a password and get a session cookie (its token is random; the database
//! keeps only its digest); every form they post carries the session's CSRF token. Systems send
//! `Authorization: Bearer <token>`; only the token's SHA-256 is configured.

use std::collections::HashMap;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Deserialize;

/// What a signed-in person or a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page and the status API.
    Viewer,
    /// Also replays and discards dead letters.
    Operator,
}

impl Role {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// The role a stored word names.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntries {
    #[serde(default)]
    operator: Vec<AccountEntry>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    name: String,
    role: Role,
    password_hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    sha256: String,
}

/// The operators file, loaded and checked.
#[derive(Debug, Default)]
pub struct Operators {
    /// Account name → role and PHC password hash.
    accounts: HashMap<String, (Role, String)>,
    /// Token digest (hex) → name and role.
    tokens: HashMap<String, (String, Role)>,
}

/// A hash of no one's password: an unknown account name costs the same verification as a
/// known one, so response times do not tell which names exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no one's password").unwrap_or_default())
}

impl Operators {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Operators, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Operators::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text; every hash and digest must be well-formed and every name unique.
    pub fn parse(text: &str) -> Result<Operators, String> {
        let entries: FileEntries = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut out = Operators::default();
        for a in entries.operator {
            if a.name.trim().is_empty() || a.name.len() > 64 {
                return Err("an operator's name must be 1 to 64 characters".into());
            }
            PasswordHash::new(&a.password_hash)
                .map_err(|e| format!("operator {:?}: password_hash is not a PHC string: {e}", a.name))?;
            if out.accounts.insert(a.name.clone(), (a.role, a.password_hash)).is_some() {
                return Err(format!("operator {:?} is listed twice", a.name));
            }
        }
        for t in entries.token {
            let digest = t.sha256.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("token {:?}: sha256 must be 64 hex digits", t.name));
            }
            if out.tokens.insert(digest, (t.name.clone(), t.role)).is_some() {
                return Err(format!("token {:?} is listed twice", t.name));
            }
        }
        Ok(out)
    }

    /// The role of an account whose password this is.
    pub fn check_password(&self, name: &str, password: &str) -> Option<Role> {
        let (role, hash) = match self.accounts.get(name) {
            Some((role, hash)) => (Some(*role), hash.as_str()),
            None => (None, dummy_hash()),
        };
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        role.filter(|_| ok)
    }

    /// The name and role of the token's owner.
    pub fn check_token(&self, token: &str) -> Option<(String, Role)> {
        self.tokens.get(&to_hex(&digest(token))).cloned()
    }

    /// How many accounts and tokens there are.
    pub fn counts(&self) -> (usize, usize) {
        (self.accounts.len(), self.tokens.len())
    }
}

/// A PHC (argon2id) hash of a password, for the operators file.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// SHA-256 of a token or cookie value.
pub fn digest(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().to_vec()
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the operating system, as hex (session tokens, CSRF tokens, API
/// tokens).
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut buf = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| "the operating system's random source failed".to_owned())?;
    Ok(to_hex(&buf))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_signs_in_with_its_role_and_nothing_else_does() {
        let hash = hash_password("correct horse").expect("hash");
        let token = "tok-123";
        let file = format!(
            "[[operator]]\nname = \"aigerim\"\nrole = \"operator\"\npassword_hash = \"{hash}\"\n\
             [[token]]\nname = \"con\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            to_hex(&digest(token))
        );
        let ops = Operators::parse(&file).expect("parses");
        assert_eq!(ops.check_password("aigerim", "correct horse"), Some(Role::Operator));
        assert_eq!(ops.check_password("aigerim", "wrong"), None);
        assert_eq!(ops.check_password("nobody", "correct horse"), None);
        assert_eq!(ops.check_token(token), Some(("con".into(), Role::Viewer)));
        assert_eq!(ops.check_token("tok-124"), None);
    }

    #[test]
    fn a_malformed_file_is_refused_with_the_entry_named() {
        let bad = "[[operator]]\nname = \"x\"\nrole = \"operator\"\npassword_hash = \"plain\"\n";
        assert!(Operators::parse(bad).unwrap_err().contains("\"x\""));
        let bad_role = "[[operator]]\nname = \"x\"\nrole = \"admin\"\npassword_hash = \"plain\"\n";
        assert!(Operators::parse(bad_role).is_err());
        let bad_token = "[[token]]\nname = \"t\"\nrole = \"viewer\"\nsha256 = \"abc\"\n";
        assert!(Operators::parse(bad_token).unwrap_err().contains("64 hex"));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
