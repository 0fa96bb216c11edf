//! The state every request shares ([`Shared`]): configuration, failure switch,
//! the settlement ledger (used nonces) and the counters; the x402 requirements it offers.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use alloy_primitives::{keccak256, Address, B256};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;
use x402::{
    ErrorReason, PaymentRequirements, PaymentRequirementsV1, PaymentRequirementsV2, ResourceInfo, VerifiedPayment,
    X402Version,
};

use crate::config::{FailureMode, MerchantConfig, RouteConfig};
use crate::protocol::NONCE_REUSED_REASON;
use crate::state::{MerchantStats, SettledPayment};

#[derive(Default)]
pub(crate) struct Ledger {
    /// (payer, nonce) pairs consumed by settlement, as EIP-3009 tracks them.
    pub(crate) used_nonces: HashSet<(Address, B256)>,
    pub(crate) settled: Vec<SettledPayment>,
}

pub(crate) struct Shared {
    pub(crate) config: MerchantConfig,
    pub(crate) base_url: String,
    pub(crate) failure: Mutex<FailureMode>,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) stats: watch::Sender<MerchantStats>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Locks a mutex, tolerating poisoning: every critical section here leaves the data
/// consistent (single inserts/pushes), so a panic elsewhere cannot corrupt it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) enum SettleOutcome {
    Settled(SettledPayment),
    NonceReused,
    Failed(String),
    LedgerFull,
}

impl Shared {
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    pub(crate) fn failure(&self) -> FailureMode {
        lock(&self.failure).clone()
    }

    pub(crate) fn bump(&self, update: impl FnOnce(&mut MerchantStats)) {
        self.stats.send_modify(update);
    }

    pub(crate) fn reject(&self, reason: &str) {
        self.bump(|s| {
            s.payments_rejected += 1;
            s.last_error_reason = Some(reason.to_owned());
        });
    }

    pub(crate) fn now(&self) -> u64 {
        self.config.clock.now_unix_secs()
    }

    pub(crate) fn extra(&self) -> serde_json::Value {
        json!({
            "name": self.config.asset_domain_name,
            "version": self.config.asset_domain_version,
        })
    }

    pub(crate) fn requirement_v1(&self, route: &RouteConfig, scheme: &str) -> PaymentRequirementsV1 {
        PaymentRequirementsV1 {
            scheme: scheme.to_owned(),
            network: self.config.network.v1_name().to_owned(),
            max_amount_required: route.price_atomic,
            resource: format!("{}{}", self.base_url, route.path),
            description: route.description.clone(),
            mime_type: Some("application/json".into()),
            output_schema: None,
            pay_to: self.config.pay_to.to_checksum(None),
            max_timeout_seconds: self.config.max_timeout_seconds,
            asset: self.config.asset.to_checksum(None),
            extra: Some(self.extra()),
            unknown_fields: Default::default(),
        }
    }

    pub(crate) fn requirement_v2(&self, route: &RouteConfig, scheme: &str) -> PaymentRequirementsV2 {
        PaymentRequirementsV2 {
            scheme: scheme.to_owned(),
            network: self.config.network.caip2().to_owned(),
            amount: route.price_atomic,
            asset: self.config.asset.to_checksum(None),
            pay_to: self.config.pay_to.to_checksum(None),
            max_timeout_seconds: self.config.max_timeout_seconds,
            extra: Some(self.extra()),
            unknown_fields: Default::default(),
        }
    }

    pub(crate) fn requirements(&self, route: &RouteConfig, scheme: &str) -> PaymentRequirements {
        match route.version {
            X402Version::V1 => PaymentRequirements::V1(self.requirement_v1(route, scheme)),
            X402Version::V2 => PaymentRequirements::V2(self.requirement_v2(route, scheme)),
        }
    }

    pub(crate) fn resource_info(&self, route: &RouteConfig) -> ResourceInfo {
        ResourceInfo {
            url: format!("{}{}", self.base_url, route.path),
            description: Some(route.description.clone()),
            mime_type: Some("application/json".into()),
            unknown_fields: Default::default(),
        }
    }

    /// Consumes the nonce and records the settlement, atomically with the reuse check.
    pub(crate) fn settle(&self, route: &str, verified: &VerifiedPayment, failure: &FailureMode) -> SettleOutcome {
        let outcome = {
            let mut ledger = self.ledger();
            let key = (verified.payer, verified.nonce);
            if ledger.used_nonces.contains(&key) {
                SettleOutcome::NonceReused
            } else if let FailureMode::SettlementFails { error_reason } = failure {
                SettleOutcome::Failed(error_reason.clone())
            } else if ledger.settled.len() >= self.config.settled_payments_max {
                SettleOutcome::LedgerFull
            } else {
                let record = SettledPayment {
                    route: route.to_owned(),
                    version: verified.version,
                    payer: verified.payer,
                    pay_to: verified.pay_to,
                    value: verified.value,
                    nonce: verified.nonce,
                    valid_before: verified.valid_before,
                    transaction: keccak256(verified.signature.as_bytes()),
                };
                ledger.used_nonces.insert(key);
                ledger.settled.push(record.clone());
                SettleOutcome::Settled(record)
            }
        };
        match &outcome {
            SettleOutcome::Settled(record) => {
                tracing::info!(payer = %record.payer, value = record.value, tx = %record.transaction, route, "x402 merchant settled");
                self.bump(|s| s.settlements_succeeded += 1);
            }
            SettleOutcome::NonceReused => self.reject(NONCE_REUSED_REASON),
            SettleOutcome::Failed(reason) => self.bump(|s| {
                s.settlements_failed += 1;
                s.last_error_reason = Some(reason.clone());
            }),
            SettleOutcome::LedgerFull => self.bump(|s| {
                s.settlements_failed += 1;
                s.last_error_reason = Some(ErrorReason::UnexpectedSettleError.as_str().into());
            }),
        }
        outcome
    }

    /// Holds the request until shutdown.
    pub(crate) async fn hang(&self) -> Response {
        self.bump(|s| s.requests_hung += 1);
        let mut shutdown = self.shutdown.clone();
        // Err means the handle is gone: stop hanging either way.
        let _ = shutdown.wait_for(|stop| *stop).await;
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }
}
