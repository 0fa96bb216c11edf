//! What an x402 receipt carries so an auditor can check its signature, and
//! the check itself.
//!
//! **Choice.** The ledger keeps each receipt text field to 256 bytes, too
//! little for the whole base64 x402 payment payload (about 700 bytes for
//! v1, more for v2). So the gateway stores the payload's parts:
//!
//! | EIP-3009 / EIP-712 field | receipt field |
//! |---|---|
//! | `from` | `wallet_address` |
//! | `value` | `amount_atomic` (the gateway captures exactly the signed value) |
//! | chain id | `network` (CAIP-2, e.g. `eip155:84532`) |
//! | signature (65 bytes, hex) | `signature` |
//! | `nonce`, `to`, `validAfter`, `validBefore`, token (`verifyingContract`), domain `name`, `version` | `payment_request_id`, as `x402e1:<nonce>:<to>:<validAfter>:<validBefore>:<token>:<name>:<version>` (name and version percent-encoded) |
//!
//! The nonce comes first, so `payment_request_id` still names the payment
//! request uniquely. From these the signed EIP-712 digest is rebuilt and the
//! signer recovered; a receipt is valid when that signer is the receipt's
//! wallet. Editing any of the fields (amount, wallet, recipient, times,
//! network, token) makes the check fail.

use serde::{Deserialize, Serialize};
use x402::exact_evm::{parse_evm_address, recover_signer, token_domain};
use x402::{Address, ExactEvmAuthorization, ExactEvmPayload, B256};

use crate::config::parse_network;

/// The tag that starts a receipt reference in this format.
pub const REFERENCE_TAG: &str = "x402e1";
/// The ledger's limit on a receipt text field.
pub const RECEIPT_TEXT_BYTES_MAX: usize = 256;

/// The signed fields a receipt's `payment_request_id` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentReference {
    pub nonce: B256,
    pub pay_to: Address,
    pub valid_after: u64,
    pub valid_before: u64,
    pub token: Address,
    pub domain_name: String,
    pub domain_version: String,
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl PaymentReference {
    pub fn encode(&self) -> String {
        format!(
            "{REFERENCE_TAG}:0x{}:{}:{}:{}:{}:{}:{}",
            hex::encode(self.nonce.as_slice()),
            self.pay_to.to_checksum(None),
            self.valid_after,
            self.valid_before,
            self.token.to_checksum(None),
            percent_encode(&self.domain_name),
            percent_encode(&self.domain_version),
        )
    }

    /// The longest encoding for a domain name and version (times at their
    /// widest): the gateway refuses to pay when this would not fit a receipt.
    pub fn encoded_len_max(domain_name: &str, domain_version: &str) -> usize {
        let widest = PaymentReference {
            nonce: B256::ZERO,
            pay_to: Address::ZERO,
            valid_after: u64::MAX,
            valid_before: u64::MAX,
            token: Address::ZERO,
            domain_name: domain_name.to_string(),
            domain_version: domain_version.to_string(),
        };
        widest.encode().len()
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [tag, nonce, pay_to, valid_after, valid_before, token, name, version] = parts.as_slice() else {
            return Err(format!("payment_request_id is not {REFERENCE_TAG} with 7 fields"));
        };
        if *tag != REFERENCE_TAG {
            return Err(format!("payment_request_id does not start with {REFERENCE_TAG}"));
        }
        let nonce = nonce
            .strip_prefix("0x")
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() == 32)
            .map(|b| B256::from_slice(&b))
            .ok_or("nonce is not 32 bytes of hex")?;
        let address = |what: &str, text: &str| parse_evm_address(text).ok_or(format!("{what} is not an EVM address"));
        let time = |what: &str, text: &str| text.parse::<u64>().map_err(|_| format!("{what} is not a Unix time"));
        Ok(PaymentReference {
            nonce,
            pay_to: address("recipient", pay_to)?,
            valid_after: time("validAfter", valid_after)?,
            valid_before: time("validBefore", valid_before)?,
            token: address("token", token)?,
            domain_name: percent_decode(name).ok_or("domain name is badly encoded")?,
            domain_version: percent_decode(version).ok_or("domain version is badly encoded")?,
        })
    }
}

/// The receipt fields verification reads (from the JSONL or CSV export, or
/// the API); everything else is ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    pub id: String,
    #[serde(default)]
    pub amount_atomic: String,
    #[serde(default)]
    pub wallet_address: Option<String>,
    #[serde(default)]
    pub payment_request_id: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub transaction_hash: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
}

impl From<&api::ReceiptView> for AuditReceipt {
    fn from(r: &api::ReceiptView) -> Self {
        AuditReceipt {
            id: r.id.clone(),
            amount_atomic: r.amount_atomic.clone(),
            wallet_address: r.wallet_address.clone(),
            payment_request_id: r.payment_request_id.clone(),
            signature: r.signature.clone(),
            transaction_hash: r.transaction_hash.clone(),
            network: r.network.clone(),
        }
    }
}

/// The outcome of checking one receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The signature recovers to the receipt's wallet.
    Valid,
    /// It does not, or a field needed to tell is missing or malformed.
    Invalid(String),
    /// Not an x402 receipt of the gateway's format (e.g. a capture made by
    /// hand): nothing to check.
    NotX402,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid(_) => "invalid",
            Verdict::NotX402 => "not_x402",
        }
    }
}

/// Rebuilds the signed EIP-3009 authorization from the receipt and checks
/// that its signature recovers to the receipt's wallet address.
pub fn verify_receipt(r: &AuditReceipt) -> Verdict {
    let reference = match r.payment_request_id.as_deref() {
        Some(text) if text.starts_with(&format!("{REFERENCE_TAG}:")) => text,
        _ => return Verdict::NotX402,
    };
    match check(r, reference) {
        Ok(()) => Verdict::Valid,
        Err(problem) => Verdict::Invalid(problem),
    }
}

fn check(r: &AuditReceipt, reference: &str) -> Result<(), String> {
    let reference = PaymentReference::decode(reference)?;
    let wallet = r
        .wallet_address
        .as_deref()
        .and_then(parse_evm_address)
        .ok_or("wallet_address is missing or not an EVM address")?;
    let network = r
        .network
        .as_deref()
        .and_then(parse_network)
        .ok_or("network is missing or not a known EVM network")?;
    let value = decimal::parse_atomic(&r.amount_atomic)
        .map_err(|_| format!("amount_atomic {:?} is not an integer", r.amount_atomic))?;
    let signature = r
        .signature
        .as_deref()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|h| hex::decode(h).ok())
        .ok_or("signature is missing or not 0x-prefixed hex")?;
    let payload = ExactEvmPayload {
        signature: signature.into(),
        authorization: ExactEvmAuthorization {
            from: wallet,
            to: reference.pay_to,
            value,
            valid_after: reference.valid_after,
            valid_before: reference.valid_before,
            nonce: reference.nonce,
        },
    };
    let domain = token_domain(
        &reference.domain_name,
        &reference.domain_version,
        network.chain_id(),
        reference.token,
    );
    let recovered = recover_signer(&payload, &domain).map_err(|e| e.to_string())?;
    if recovered != wallet {
        return Err(format!(
            "the signature recovers {recovered}, not the receipt's wallet {wallet}"
        ));
    }
    Ok(())
}

/// Reads an export: JSON Lines (`spendcap receipts export`) or its CSV form
/// (`--format csv`), told apart by the first character.
pub fn parse_export(text: &str) -> Result<Vec<AuditReceipt>, String> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    if trimmed.starts_with('{') {
        return text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1)))
            .collect();
    }
    let rows = parse_csv(text)?;
    let mut rows = rows.into_iter();
    let header = rows.next().ok_or("empty CSV")?;
    let column = |name: &str| header.iter().position(|h| h == name);
    let id = column("id").ok_or("the CSV has no id column")?;
    let columns = [
        column("amount_atomic"),
        column("wallet_address"),
        column("payment_request_id"),
        column("signature"),
        column("transaction_hash"),
        column("network"),
    ];
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        if row.len() == 1 && row[0].is_empty() {
            continue;
        }
        if row.len() != header.len() {
            return Err(format!(
                "CSV row {} has {} fields, the header {}",
                i + 2,
                row.len(),
                header.len()
            ));
        }
        let get = |c: Option<usize>| c.map(|c| row[c].clone()).filter(|v| !v.is_empty());
        out.push(AuditReceipt {
            id: row[id].clone(),
            amount_atomic: get(columns[0]).unwrap_or_default(),
            wallet_address: get(columns[1]),
            payment_request_id: get(columns[2]),
            signature: get(columns[3]),
            transaction_hash: get(columns[4]),
            network: get(columns[5]),
        });
    }
    Ok(out)
}

/// RFC 4180 CSV: fields may be quoted, quotes doubled inside quotes, and
/// quoted fields may hold commas and line breaks.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                other => field.push(other),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
            }
            other => {
                field.push(other);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err("unterminated quoted CSV field".into());
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x402::exact_evm::BASE_SEPOLIA_USDC;

    // The golden vector from the x402 v1 specification example.
    const SIGNATURE: &str = "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c";
    const FROM: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";
    const TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
    const NONCE: &str = "f3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480";

    fn golden_reference(name: &str) -> PaymentReference {
        PaymentReference {
            nonce: B256::from_slice(&hex::decode(NONCE).unwrap()),
            pay_to: parse_evm_address(TO).unwrap(),
            valid_after: 1_740_672_089,
            valid_before: 1_740_672_154,
            token: BASE_SEPOLIA_USDC,
            domain_name: name.into(),
            domain_version: "2".into(),
        }
    }

    fn golden_receipt() -> AuditReceipt {
        AuditReceipt {
            id: "rc_1".into(),
            amount_atomic: "10000".into(),
            wallet_address: Some(FROM.into()),
            payment_request_id: Some(golden_reference("USDC").encode()),
            signature: Some(SIGNATURE.into()),
            transaction_hash: Some("0x1234".into()),
            network: Some("base-sepolia".into()),
        }
    }

    #[test]
    fn reference_round_trips_and_fits() {
        let r = golden_reference("USD Coin");
        let text = r.encode();
        assert!(text.starts_with("x402e1:0xf3746613"), "{text}");
        assert!(text.contains(":USD%20Coin:2"), "{text}");
        assert_eq!(PaymentReference::decode(&text).unwrap(), r);
        assert!(text.len() <= RECEIPT_TEXT_BYTES_MAX);
        assert!(PaymentReference::encoded_len_max("USD Coin", "2") <= RECEIPT_TEXT_BYTES_MAX);
        assert!(PaymentReference::decode("x402e1:0x12").is_err());
        let odd = golden_reference("a:b%c/d é");
        assert_eq!(PaymentReference::decode(&odd.encode()).unwrap(), odd);
    }

    #[test]
    fn golden_receipt_verifies() {
        assert_eq!(verify_receipt(&golden_receipt()), Verdict::Valid);
        let caip = AuditReceipt {
            network: Some("eip155:84532".into()),
            ..golden_receipt()
        };
        assert_eq!(verify_receipt(&caip), Verdict::Valid);
    }

    #[test]
    fn tampering_is_caught() {
        let tampered = [
            AuditReceipt {
                amount_atomic: "10001".into(),
                ..golden_receipt()
            },
            AuditReceipt {
                wallet_address: Some(TO.into()),
                ..golden_receipt()
            },
            AuditReceipt {
                network: Some("base".into()),
                ..golden_receipt()
            },
            AuditReceipt {
                payment_request_id: Some(golden_reference("USD Coin").encode()),
                ..golden_receipt()
            },
            AuditReceipt {
                payment_request_id: Some(
                    PaymentReference {
                        valid_before: 1_740_672_155,
                        ..golden_reference("USDC")
                    }
                    .encode(),
                ),
                ..golden_receipt()
            },
            AuditReceipt {
                signature: Some(SIGNATURE.replace("2d6a", "2d6b")),
                ..golden_receipt()
            },
            AuditReceipt {
                signature: None,
                ..golden_receipt()
            },
        ];
        for r in &tampered {
            assert!(matches!(verify_receipt(r), Verdict::Invalid(_)), "{r:?}");
        }
        let manual = AuditReceipt {
            payment_request_id: Some("invoice-42".into()),
            ..golden_receipt()
        };
        assert_eq!(verify_receipt(&manual), Verdict::NotX402);
    }

    #[test]
    fn exports_parse_as_jsonl_and_csv() {
        let r = golden_receipt();
        let jsonl = format!(
            "{}\n\n{}\n",
            serde_json::json!({"id": r.id, "amount_atomic": r.amount_atomic, "wallet_address": r.wallet_address,
                "payment_request_id": r.payment_request_id, "signature": r.signature, "network": r.network,
                "transaction_hash": r.transaction_hash, "session_id": "ses_1", "context": {}}),
            serde_json::json!({"id": "rc_2", "amount_atomic": "5", "payment_request_id": null}),
        );
        let parsed = parse_export(&jsonl).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], r);
        assert_eq!(verify_receipt(&parsed[1]), Verdict::NotX402);

        let csv = format!(
            "id,authorization_id,amount_atomic,wallet_address,payment_request_id,signature,transaction_hash,network,tool\n\
             {},au_1,{},{},{},{},{},{},\"a, \"\"quoted\"\"\ntool\"\n",
            r.id,
            r.amount_atomic,
            FROM,
            r.payment_request_id.clone().unwrap(),
            SIGNATURE,
            "0x1234",
            "base-sepolia"
        );
        let parsed = parse_export(&csv).unwrap();
        assert_eq!(parsed, vec![r]);
        assert!(parse_export("id,x\n1,2,3\n").is_err());
        assert!(parse_export("id,x\n\"1,2\n").is_err());
        assert!(parse_export("").unwrap().is_empty());
    }
}
