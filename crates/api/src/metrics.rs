//! Prometheus metric names (defined once, in the `metric-names` crate, which
//! the storage crate uses too; re-exported here for the node and clients).

pub use metric_names::*;
