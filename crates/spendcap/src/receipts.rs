//! The receipts the CLI reads: the CSV form of an export, and checking each
//! x402 receipt's signature (`receipts verify`).

use anyhow::{bail, Context};
use api::ReceiptView;
use gateway::receipt::{parse_export, verify_receipt, Verdict};

/// The receipt columns of the CSV export, in order.
const CSV_COLUMNS: [&str; 17] = [
    "id",
    "authorization_id",
    "session_id",
    "agent_id",
    "tool",
    "amount",
    "amount_atomic",
    "asset",
    "wallet_address",
    "payment_request_id",
    "signature",
    "transaction_hash",
    "network",
    "resource_url",
    "timestamp_ms",
    "trace_id",
    "tool_call_id",
];

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub fn to_csv(jsonl: &str) -> anyhow::Result<String> {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let r: ReceiptView = serde_json::from_str(line).context("a receipt line")?;
        let fields = [
            r.id,
            r.authorization_id,
            r.session_id,
            r.agent_id,
            r.tool,
            r.amount,
            r.amount_atomic,
            r.asset,
            r.wallet_address.unwrap_or_default(),
            r.payment_request_id.unwrap_or_default(),
            r.signature.unwrap_or_default(),
            r.transaction_hash.unwrap_or_default(),
            r.network.unwrap_or_default(),
            r.resource_url.unwrap_or_default(),
            r.timestamp_ms.to_string(),
            r.context.trace_id.unwrap_or_default(),
            r.context.tool_call_id.unwrap_or_default(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    Ok(out)
}

/// `receipts verify`: one JSON line per receipt, a summary on stderr; fails
/// when any receipt is invalid (or, with `--strict`, not an x402 receipt).
pub fn verify(text: &str, strict: bool) -> anyhow::Result<()> {
    let receipts = parse_export(text).map_err(|e| anyhow::anyhow!("reading the receipts: {e}"))?;
    let (mut valid, mut invalid, mut other) = (0usize, 0usize, 0usize);
    for r in &receipts {
        let verdict = verify_receipt(r);
        let detail = match &verdict {
            Verdict::Valid => {
                valid += 1;
                None
            }
            Verdict::Invalid(why) => {
                invalid += 1;
                Some(why.clone())
            }
            Verdict::NotX402 => {
                other += 1;
                None
            }
        };
        let line = serde_json::json!({
            "id": r.id,
            "result": verdict.as_str(),
            "detail": detail,
            "wallet_address": r.wallet_address,
            "transaction_hash": r.transaction_hash,
        });
        println!("{line}");
    }
    eprintln!(
        "{} receipts: {valid} valid, {invalid} invalid, {other} not x402",
        receipts.len()
    );
    if invalid > 0 {
        bail!("{invalid} receipt(s) failed verification");
    }
    if strict && other > 0 {
        bail!("{other} receipt(s) are not x402 receipts (--strict)");
    }
    Ok(())
}
