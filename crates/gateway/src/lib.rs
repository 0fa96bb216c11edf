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
//! * [`pay`] (private): the payment steps, in order, one module per step;
//! * `shared` (private): the state every request uses, and the counters;
//! * [`ids`]: the deterministic nonce and the ledger keys derived from it
//!   (why a retried request never pays twice);
//! * [`receipt`]: what a receipt carries and how it is verified;
//! * [`keys`]: wallet keys and the signer registry;
//! * [`policy`]: which upstreams may be fetched (allowlist, no private or
//!   own addresses, resolved once and pinned);
//! * [`tools`]: which ledger tool a payment is charged to (derived from the
//!   upstream, never taken from the agent);
//! * [`reconcile`]: listing pinned holds with their `validBefore`;
//! * [`limits`]: the named limits and the configuration error (below
//!   [`config`], [`policy`] and [`tools`]);
//! * [`config`], [`error`], [`wire`], [`ledger`], [`upstream`].

pub mod config;
pub mod error;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod limits;
mod pay;
pub mod policy;
pub mod receipt;
pub mod reconcile;
pub mod server;
mod shared;
pub mod tools;
pub mod upstream;
pub mod wire;

pub use config::{AllowedAsset, GatewayConfig, Limits};
pub use error::{Code, ErrorBody, GatewayError};
pub use keys::KeyRing;
pub use policy::{HostPattern, UpstreamPolicy};
pub use server::{app, Gateway, GatewayHandle, GatewayState, StartError};
pub use tools::ToolRule;
pub use wire::{FetchRequest, FetchResponse, PaymentInfo, PaymentOutcome, StatsView};
