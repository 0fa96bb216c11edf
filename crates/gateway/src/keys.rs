//! Wallet keys: they live with the gateway, are looked up by the session's
//! `wallet_address`, and are never returned, printed or logged.
//!
//! A key file (or the `SPENDCAP_GATEWAY_KEYS` variable) holds one wallet per
//! line: `ADDRESS=HEXKEY` (the address is checked against the key), or a bare
//! `HEXKEY`. Blank lines and lines starting with `#` are ignored; in the
//! variable, `;` also separates entries. Any signer (a remote KMS, say) can
//! be added with [`KeyRing::insert`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use x402::exact_evm::parse_evm_address;
use x402::{Address, DynSigner, LocalKeySigner, SharedSigner};

/// The wallets the gateway can sign for.
#[derive(Clone, Default)]
pub struct KeyRing {
    signers: BTreeMap<Address, SharedSigner>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("addresses", &self.signers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The message never contains key material: only the line number.
    #[error("key entry {entry}: {problem}")]
    Entry { entry: usize, problem: String },
    #[error("key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("wallet {0} appears twice")]
    Duplicate(Address),
}

impl KeyRing {
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Adds a signer (any kind: a local key, a remote KMS client).
    pub fn insert(&mut self, signer: Arc<dyn DynSigner>) -> Result<(), KeyError> {
        let address = signer.signer_address();
        if self.signers.contains_key(&address) {
            return Err(KeyError::Duplicate(address));
        }
        self.signers.insert(address, SharedSigner::from_arc(signer));
        Ok(())
    }

    pub fn get(&self, address: &Address) -> Option<SharedSigner> {
        self.signers.get(address).cloned()
    }

    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.signers.keys()
    }

    pub fn len(&self) -> usize {
        self.signers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    /// Adds every key in `text` (the key-file format).
    pub fn add_text(&mut self, text: &str) -> Result<(), KeyError> {
        let entries = text
            .split(['\n', ';'])
            .map(str::trim)
            .enumerate()
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
        for (index, line) in entries {
            let entry = index + 1;
            let problem = |problem: &str| KeyError::Entry {
                entry,
                problem: problem.to_string(),
            };
            let (claimed, key) = match line.split_once('=') {
                Some((address, key)) => {
                    let address = parse_evm_address(address.trim())
                        .ok_or_else(|| problem("the part before '=' is not an EVM address"))?;
                    (Some(address), key.trim())
                }
                None => (None, line),
            };
            // The signer's own error names the problem, never the key.
            let signer = LocalKeySigner::from_hex(key).map_err(|e| problem(&e.to_string()))?;
            if let Some(claimed) = claimed {
                if claimed != x402::Signer::address(&signer) {
                    return Err(problem("the key does not belong to the address before '='"));
                }
            }
            self.insert(Arc::new(signer))?;
        }
        Ok(())
    }

    /// Adds every key in a key file. On Unix, a file others can read is
    /// refused.
    pub fn add_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(io(std::io::Error::other(format!(
                    "mode {:o} lets others read it; chmod 600 it",
                    mode & 0o777
                ))));
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        self.add_text(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Well-known development keys (Hardhat/Anvil accounts #0 and #1); never
    // hold real funds.
    const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const ADDR0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    const KEY1: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    #[test]
    fn parses_lines_and_checks_addresses() {
        let mut ring = KeyRing::new();
        ring.add_text(&format!("# wallets\n{ADDR0}={KEY0}\n\n{KEY1}\n"))
            .unwrap();
        assert_eq!(ring.len(), 2);
        assert!(ring.get(&parse_evm_address(ADDR0).unwrap()).is_some());

        let mut ring = KeyRing::new();
        let wrong = format!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8={KEY0}");
        let err = ring.add_text(&wrong).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert!(!err.contains(&KEY0[2..10]));

        let mut ring = KeyRing::new();
        assert!(
            ring.add_text(&format!("{KEY0};{KEY0}")).is_err(),
            "duplicates are refused"
        );
        assert!(KeyRing::new().add_text("0x1234").is_err());
    }

    #[test]
    fn never_prints_keys() {
        let mut ring = KeyRing::new();
        ring.add_text(KEY0).unwrap();
        let printed = format!("{ring:?} {ring:#?}");
        assert!(!printed.contains(&KEY0[2..12]));
        assert!(printed.to_lowercase().contains(&ADDR0.to_lowercase()[2..]));
        let err = KeyRing::new().add_text(&format!("{}zz", &KEY0[..64])).unwrap_err();
        assert!(!err.to_string().contains(&KEY0[2..12]));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_readable_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, KEY0).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(KeyRing::new().add_file(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut ring = KeyRing::new();
        ring.add_file(&path).unwrap();
        assert_eq!(ring.len(), 1);
    }
}
