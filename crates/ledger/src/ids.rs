//! Names and identifiers, each with its validation rule in one place.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest budget or session id, in bytes.
pub const ID_BYTES_MAX: usize = 128;
/// Longest tool name, in bytes (tools are often hosts or `mcp:server/tool`).
pub const TOOL_BYTES_MAX: usize = 200;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Longest free-text field (agent id, wallet address, receipt fields), in bytes.
pub const TEXT_BYTES_MAX: usize = 256;
/// Longest asset code (`USDC`, `EURC`, `ETH`), in bytes.
pub const ASSET_CODE_BYTES_MAX: usize = 16;

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} bytes")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} may only contain {allowed}")]
    BadCharacter { what: &'static str, allowed: &'static str },
}

fn check(
    text: &str,
    what: &'static str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty { what });
    }
    if text.len() > max {
        return Err(NameError::TooLong { what, max });
    }
    if !text.bytes().all(ok) {
        return Err(NameError::BadCharacter { what, allowed });
    }
    Ok(())
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.' | b'@')
}

fn visible_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $allowed:literal, $ok:expr) => {
        $(#[$doc])*
        ///
        /// Shared (`Arc<str>`): the ledger keeps the same name in several
        /// maps and records, and a clone is a reference count, not a copy.
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(text: impl Into<String>) -> Result<Self, NameError> {
                let text: String = text.into();
                check(&text, $what, $max, $allowed, $ok)?;
                Ok(Self(Arc::from(text)))
            }

            /// Re-checks a value that arrived through deserialization, which
            /// bypasses [`Self::new`].
            pub fn validate(&self) -> Result<(), NameError> {
                check(&self.0, $what, $max, $allowed, $ok)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A budget's name, e.g. `org:acme`, `team:research`, `user:alice`.
    BudgetId, "budget id", ID_BYTES_MAX, "letters, digits and _ - : . @", id_byte
);
name_type!(
    /// A payment session's id.
    SessionId, "session id", ID_BYTES_MAX, "letters, digits and _ - : . @", id_byte
);
name_type!(
    /// The tool (paid API, MCP tool, host) a spend is for.
    Tool, "tool", TOOL_BYTES_MAX, "visible ASCII characters", visible_byte
);
name_type!(
    /// A caller's idempotency key; scoped to a session (or to the admin).
    IdempotencyKey, "idempotency key", IDEMPOTENCY_KEY_BYTES_MAX, "visible ASCII characters", visible_byte
);
name_type!(
    /// An asset code such as `USDC`.
    AssetCode, "asset code", ASSET_CODE_BYTES_MAX, "letters, digits and _ - : . @", id_byte
);

/// Checks a free-text field: at most [`TEXT_BYTES_MAX`] bytes, no control
/// characters.
pub fn check_text(text: &str, what: &'static str) -> Result<(), NameError> {
    if text.len() > TEXT_BYTES_MAX {
        return Err(NameError::TooLong {
            what,
            max: TEXT_BYTES_MAX,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(NameError::BadCharacter {
            what,
            allowed: "printable characters",
        });
    }
    Ok(())
}

/// An authorization (hold) id: a counter in the replicated state, so every
/// replica names a hold the same way. Shown as `au_<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HoldId(pub u64);

/// A receipt id, shown as `rc_<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReceiptId(pub u64);

macro_rules! prefixed_counter {
    ($name:ident, $prefix:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, NameError> {
                let digits = s.strip_prefix($prefix).ok_or(NameError::BadCharacter {
                    what: stringify!($name),
                    allowed: concat!("the form ", $prefix, "<number>"),
                })?;
                // Canonical form only: no sign, no leading zeros.
                if digits.is_empty()
                    || (digits.len() > 1 && digits.starts_with('0'))
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(NameError::BadCharacter {
                        what: stringify!($name),
                        allowed: concat!("the form ", $prefix, "<number>"),
                    });
                }
                digits.parse().map($name).map_err(|_| NameError::TooLong {
                    what: stringify!($name),
                    max: 20,
                })
            }
        }
    };
}

prefixed_counter!(HoldId, "au_");
prefixed_counter!(ReceiptId, "rc_");

/// An asset and how many decimals its smallest unit has (USDC: 6).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Asset {
    pub code: AssetCode,
    pub decimals: u8,
}

impl Asset {
    pub fn usdc() -> Asset {
        Asset {
            code: AssetCode(Arc::from("USDC")),
            decimals: 6,
        }
    }
}

/// What the caller tells us about why it is spending, so an auditor can tie a
/// payment to the decision behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecisionContext {
    pub trace_id: Option<String>,
    pub tool_call_id: Option<String>,
    pub note: Option<String>,
}

impl DecisionContext {
    pub fn validate(&self) -> Result<(), NameError> {
        for (value, what) in [
            (&self.trace_id, "context.trace_id"),
            (&self.tool_call_id, "context.tool_call_id"),
            (&self.note, "context.note"),
        ] {
            if let Some(v) = value {
                check_text(v, what)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_their_rules() {
        assert!(BudgetId::new("team:research").is_ok());
        assert!(BudgetId::new("user:alice@example.com").is_ok());
        assert!(BudgetId::new("").is_err());
        assert!(BudgetId::new("has space").is_err());
        assert!(BudgetId::new("x".repeat(129)).is_err());
        assert!(Tool::new("api.openai.com/v1/chat").is_ok());
        assert!(Tool::new("tab\tin").is_err());
        assert!(check_text("line\nbreak", "note").is_err());
    }

    #[test]
    fn counters_print_and_parse_canonically() {
        assert_eq!(HoldId(42).to_string(), "au_42");
        assert_eq!("au_42".parse::<HoldId>(), Ok(HoldId(42)));
        assert!("au_042".parse::<HoldId>().is_err());
        assert!("au_".parse::<HoldId>().is_err());
        assert!("au_-1".parse::<HoldId>().is_err());
        assert!("rc_1".parse::<HoldId>().is_err());
        assert!("au_99999999999999999999999".parse::<HoldId>().is_err());
        assert_eq!("rc_7".parse::<ReceiptId>(), Ok(ReceiptId(7)));
    }
}
