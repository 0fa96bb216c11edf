//! spendcap's x402 gateway.
//!
//! Agents send their outbound HTTP requests through it (`POST /v1/fetch`
//! with their session token). When a paid API answers `402 Payment
//! Required`, the gateway asks the ledger first: a denial means no payment
//! is ever signed. An approval becomes a hold, which is pinned before the
//! signed payment leaves; the merchant's answer then captures it (with a
//! receipt an auditor can verify), voids it, or — when nobody can know
//! whether the money moved — leaves it pinned for reconciliation. Agents
//! never see wallet keys and never implement x402.
//!
//! * [`server`]: the axum app, start/stop;
//! * [`pay`] (private): the payment steps, in order;
//! * [`ids`]: the deterministic nonce and the ledger keys derived from it
//!   (why a retried request never pays twice);
//! * [`receipt`]: what a receipt carries and how it is verified;
//! * [`keys`]: wallet keys and the signer registry;
//! * [`config`], [`error`], [`wire`], [`ledger`], [`upstream`].

pub mod config;
pub mod error;
pub mod ids;
pub mod keys;
pub mod ledger;
mod pay;
pub mod receipt;
pub mod server;
pub mod upstream;
pub mod wire;

pub use config::{AllowedAsset, GatewayConfig, Limits};
pub use error::{Code, ErrorBody, GatewayError};
pub use keys::KeyRing;
pub use server::{app, Gateway, GatewayHandle, GatewayState, StartError};
pub use wire::{FetchRequest, FetchResponse, PaymentInfo, PaymentOutcome, StatsView};
