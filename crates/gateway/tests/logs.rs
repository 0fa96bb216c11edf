//! What the gateway, the ledger nodes and the merchant log, at debug level,
//! during paid fetches, contains no secret that went through them: the
//! admin, peer and gateway tokens, the agent's session token (and a wrong
//! one an agent sent), the wallet key, or an x402 payment signature.
//!
//! Everything runs in this one process (its own test binary), so one
//! capturing subscriber sees every component's events and span fields.

mod common;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Records every field of every event and span at debug level or above, as
/// `name=value` text: what a `RUST_LOG=debug` log would carry, and more.
struct Capture {
    text: Arc<Mutex<String>>,
    next_id: AtomicU64,
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl Capture {
    fn append(&self, record: impl FnOnce(&mut Fields<'_>)) {
        let mut text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        record(&mut Fields(&mut text));
        text.push('\n');
    }
}

impl Subscriber for Capture {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::DEBUG
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.append(|f| {
            let _ = write!(f.0, "span {} ", span.metadata().name());
            span.record(f);
        });
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, values: &Record<'_>) {
        self.append(|f| values.record(f));
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        self.append(|f| {
            let _ = write!(f.0, "{} {} ", event.metadata().level(), event.metadata().target());
            event.record(f);
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_never_carry_a_token_a_key_or_a_payment_signature() {
    let text = Arc::new(Mutex::new(String::new()));
    tracing::subscriber::set_global_default(Capture {
        text: text.clone(),
        next_id: AtomicU64::new(0),
    })
    .expect("the only subscriber of this test binary");

    // Three nodes, so the peer token is on every Raft RPC.
    let ledger = Ledger::start(3).await;
    let merchant = merchant(|_| {}).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);

    let mut receipts = Vec::new();
    for (path, key) in [(V1_REPORT, "logged-v1"), (V2_REPORT, "logged-v2")] {
        let (status, answer) = agent.fetch(&merchant.url(path), Some(key)).await;
        assert_eq!(status, 200, "{answer}");
        let id = answer["payment"]["receipt_id"].as_str().expect("a receipt").to_string();
        receipts.push(ledger.admin().get_receipt(&id).await.expect("the receipt"));
    }
    // A wrong session token is refused (and must not be logged either).
    const WRONG: &str = "sct_not-a-real-session-token-0123456789";
    let (status, answer) = agent
        .send_as(WRONG, &agent.request(&merchant.url(V1_REPORT), None))
        .await;
    assert_eq!(status, 401, "{answer}");

    let mut secrets: Vec<String> = [
        ADMIN_TOKEN,
        GATEWAY_TOKEN,
        PEER_TOKEN,
        WRONG,
        token.as_str(),
        WALLET_KEY,
    ]
    .map(str::to_string)
    .to_vec();
    secrets.push(WALLET_KEY.trim_start_matches("0x").to_string());
    for receipt in &receipts {
        let signature = receipt.signature.clone().expect("the payment's signature");
        assert!(signature.len() > 100, "a 65-byte signature in hex: {signature}");
        secrets.push(signature.trim_start_matches("0x").to_string());
        secrets.push(signature);
    }

    gw.shutdown().await;
    merchant.shutdown().await;
    ledger.shutdown().await;
    let text = text.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // The scan sees every component: the nodes (their request spans), the
    // gateway, the merchant.
    for seen in ["request_id=", "x402 payment captured", "x402 merchant settled"] {
        assert!(text.contains(seen), "no {seen:?} in the captured logs");
    }
    for secret in &secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
            let shown = line.replace(secret.as_str(), "<SECRET>");
            panic!("a secret was logged ({}...): {shown}", &secret[..8]);
        }
    }
}
