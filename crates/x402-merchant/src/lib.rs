//! A test merchant for x402: a paid HTTP API plus its in-process facilitator, with real
//! EIP-712 verification, deterministic "settlement", failure switches and counters.
//!
//! It is test support for the spendcap gateway: start it on 127.0.0.1 with
//! [`Merchant::start`], point a client at [`MerchantHandle::url`], and assert on
//! [`MerchantHandle::stats`] and [`MerchantHandle::settled`].
//!
//! Paid routes (one per [`RouteConfig`], `GET`):
//! * no payment header → 402 with requirements (v1: JSON body; v2: `PAYMENT-REQUIRED`);
//! * undecodable payment header → 400;
//! * payment that fails verification (signature, scheme, network, recipient, amount, validity
//!   window against the merchant's clock, nonce already used) → 402 with the requirements and
//!   `error` = the x402 reason code;
//! * settlement failure (switch) → 402 with a settlement header `success:false`;
//! * success → 200 with the route's body and the settlement header (`X-PAYMENT-RESPONSE` /
//!   `PAYMENT-RESPONSE`) carrying a deterministic transaction hash (keccak-256 of the
//!   signature) and the payer.
//!
//! Facilitator routes: `POST /facilitator/verify`, `POST /facilitator/settle`,
//! `GET /facilitator/supported`.

mod config;
mod handlers;
mod protocol;
mod respond;
mod server;
mod shared;
mod state;

pub use config::{FailureMode, MerchantClock, MerchantConfig, RouteConfig};
pub use protocol::{FACILITATOR_PREFIX, NONCE_REUSED_REASON};
pub use server::{Merchant, MerchantError, MerchantHandle};
pub use state::{MerchantStats, SettledPayment};
