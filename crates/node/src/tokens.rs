//! Bearer tokens: the admin token, and session tokens (random; only their
//! SHA-256 is stored and replicated).

use std::fs;
use std::io::Write;
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const SESSION_TOKEN_PREFIX: &str = api::SESSION_TOKEN_PREFIX;
pub const ADMIN_TOKEN_PREFIX: &str = "sca_";
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Longest bearer token the API looks at.
pub const TOKEN_BYTES_MAX: usize = 256;

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A new session token (256 random bits).
pub fn new_session_token() -> String {
    format!("{SESSION_TOKEN_PREFIX}{}", random_hex(32))
}

/// A new session id, for sessions created without one.
pub fn new_session_id() -> String {
    format!("ses_{}", random_hex(12))
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares without leaking where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Compares two secrets in time that depends on neither their contents nor
/// their lengths (both are hashed first, then compared in constant time).
pub fn tokens_equal(given: &str, expected: &str) -> bool {
    constant_time_eq(&hash_token(given), &hash_token(expected))
}

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("admin token file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("admin token must be 16 to {TOKEN_BYTES_MAX} visible ASCII characters")]
    Invalid,
    #[error("gateway token must be 16 to {TOKEN_BYTES_MAX} visible ASCII characters and differ from the admin token")]
    InvalidGateway,
    #[error("peer token must be 16 to {TOKEN_BYTES_MAX} visible ASCII characters and differ from the admin and gateway tokens")]
    InvalidPeer,
    /// A token copied unedited from an example file.
    #[error(
        "the {which} token is a placeholder from an example file, which anyone can read: \
         generate real tokens with cluster/make-env.sh, or use `openssl rand -hex 32` for each"
    )]
    Placeholder { which: &'static str },
}

/// Words that mark an example value nobody should run with.
const PLACEHOLDER_MARKERS: [&str; 4] = ["change-me", "changeme", "replace-me", "your-token"];

/// Whether a token is an example file's placeholder (e.g.
/// `change-me-to-a-long-random-token` in cluster/compose.env.example).
pub fn is_placeholder(token: &str) -> bool {
    let t = token.to_ascii_lowercase();
    PLACEHOLDER_MARKERS.iter().any(|m| t.contains(m))
}

/// Where the admin token came from.
pub enum AdminToken {
    Configured(String),
    /// Read from the data directory (generated on an earlier start).
    Stored(String),
    /// Generated now and stored with mode 0600: print it once.
    Generated(String),
}

impl AdminToken {
    pub fn value(&self) -> &str {
        match self {
            AdminToken::Configured(t) | AdminToken::Stored(t) | AdminToken::Generated(t) => t,
        }
    }
}

/// The gateway token must be a valid token and must differ from the admin
/// token (a gateway that held the admin token could do anything).
pub fn check_gateway_token(gateway: &str, admin: &str) -> Result<(), AdminTokenError> {
    if is_placeholder(gateway) {
        return Err(AdminTokenError::Placeholder { which: "gateway" });
    }
    if !valid(gateway) || constant_time_eq(gateway.as_bytes(), admin.as_bytes()) {
        return Err(AdminTokenError::InvalidGateway);
    }
    Ok(())
}

/// The peer token must be a valid token and differ from the admin and
/// gateway tokens (every node holds it; it must grant nothing on the API).
pub fn check_peer_token(peer: &str, admin: &str, gateway: Option<&str>) -> Result<(), AdminTokenError> {
    if is_placeholder(peer) {
        return Err(AdminTokenError::Placeholder { which: "peer" });
    }
    let same_as = |other: &str| constant_time_eq(peer.as_bytes(), other.as_bytes());
    if !valid(peer) || same_as(admin) || gateway.is_some_and(same_as) {
        return Err(AdminTokenError::InvalidPeer);
    }
    Ok(())
}

fn valid(token: &str) -> bool {
    (16..=TOKEN_BYTES_MAX).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The configured token, else the one in `data_dir`, else a new one written
/// there with mode 0600.
pub fn load_admin_token(configured: Option<&str>, data_dir: &Path) -> Result<AdminToken, AdminTokenError> {
    if let Some(t) = configured {
        if is_placeholder(t) {
            return Err(AdminTokenError::Placeholder { which: "admin" });
        }
        return if valid(t) {
            Ok(AdminToken::Configured(t.to_string()))
        } else {
            Err(AdminTokenError::Invalid)
        };
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let io = |source| AdminTokenError::Io {
        path: path.display().to_string(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let t = text.trim().to_string();
            if valid(&t) {
                Ok(AdminToken::Stored(t))
            } else {
                Err(AdminTokenError::Invalid)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(io)?;
            let token = format!("{ADMIN_TOKEN_PREFIX}{}", random_hex(32));
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&path).map_err(io)?;
            file.write_all(token.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(AdminToken::Generated(token))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_admin_token(None, dir.path()).unwrap();
        assert!(matches!(first, AdminToken::Generated(_)));
        let again = load_admin_token(None, dir.path()).unwrap();
        assert!(matches!(again, AdminToken::Stored(ref t) if t == first.value()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(load_admin_token(Some("short"), dir.path()).is_err());
    }

    /// Every token in the example env file is refused with a message that
    /// says how to make real ones, for each role it could be used in.
    #[test]
    fn the_example_env_files_tokens_are_refused_as_placeholders() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../cluster/compose.env.example");
        let text = fs::read_to_string(path).expect("cluster/compose.env.example");
        let tokens: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.ends_with("_TOKEN") && !k.starts_with('#'))
            .map(|(_, v)| v.trim())
            .collect();
        assert_eq!(tokens.len(), 3, "admin, peer and gateway tokens in {path}: {tokens:?}");
        let dir = tempfile::tempdir().unwrap();
        let real = "admin-token-0123456789";
        for t in tokens {
            let e = load_admin_token(Some(t), dir.path())
                .err()
                .expect("placeholder admin token refused");
            assert!(matches!(e, AdminTokenError::Placeholder { which: "admin" }), "{e}");
            assert!(e.to_string().contains("cluster/make-env.sh"), "{e}");
            assert!(matches!(
                check_gateway_token(t, real),
                Err(AdminTokenError::Placeholder { which: "gateway" })
            ));
            assert!(matches!(
                check_peer_token(t, real, None),
                Err(AdminTokenError::Placeholder { which: "peer" })
            ));
        }
        // A random token is not a placeholder.
        assert!(!is_placeholder(&new_session_token()));
        assert!(load_admin_token(Some("A-Real-Token-ChangeMe-Later"), dir.path()).is_err());
    }

    #[test]
    fn tokens_differ_and_compare_exactly() {
        let a = new_session_token();
        assert_ne!(a, new_session_token());
        assert!(a.starts_with(SESSION_TOKEN_PREFIX));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(tokens_equal("peer-secret-0123456789", "peer-secret-0123456789"));
        assert!(!tokens_equal("peer-secret-0123456789", "peer-secret-012345678"));
        assert!(!tokens_equal("", "peer-secret-0123456789"));
    }

    #[test]
    fn peer_token_is_long_and_differs_from_the_other_tokens() {
        let admin = "admin-token-0123456789";
        assert!(check_peer_token("peer-token-0123456789", admin, None).is_ok());
        assert!(matches!(
            check_peer_token("change-me-to-another-long-random-token", admin, None),
            Err(AdminTokenError::Placeholder { which: "peer" })
        ));
        assert!(check_peer_token("short", admin, None).is_err());
        assert!(check_peer_token(admin, admin, None).is_err());
        assert!(check_peer_token("gateway-token-0123456789", admin, Some("gateway-token-0123456789")).is_err());
    }
}
