//! spendcap's ledger core: a pure, deterministic state machine.
//!
//! Commands go in (batched into an [`Entry`] stamped with the leader's
//! clock), outcomes come out, and what changed is reported as records for the
//! node to persist. No I/O, no async, no clock, no randomness: every replica
//! applying the same entries reaches byte-identical state ([`Ledger::digest`]).
//!
//! The invariant the whole system exists for: for every session, budget and
//! tool cap, `spent + held <= cap`.

pub mod amount;
pub mod command;
pub mod ids;
pub mod model;
pub mod outcome;
pub mod records;
pub mod state;

pub use amount::{Amount, AmountError, AmountInput};
pub use command::*;
pub use ids::*;
pub use model::{Budget, CapUsage, Hold, Meta, Receipt, Session, Settling, Usage};
pub use outcome::*;
pub use records::{HistoryRecord, RecordError, RecordKey};
pub use state::{Changes, Ledger};
