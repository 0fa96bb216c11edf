//! spendcap-bench: compares spendcap with etcd, PostgreSQL and Redis doing
//! the same job (check a spend against a cap and record it, durably), on
//! one machine, under the same load generator.
//!
//! - [`peers`]: the systems, each started from its own binary in a temp dir
//!   on 127.0.0.1, and the [`peers::Driver`] interface the load generator
//!   uses;
//! - [`loadgen`]: closed- and open-loop load with HdrHistogram latencies;
//! - [`workload`]: hot, spread, seed and batch;
//! - [`tracker`]: the per-run correctness check of each peer's stored state;
//! - [`procs`]: server processes and their CPU time and memory;
//! - [`runner`] (with [`targets`]), [`report`], [`charts`]: the comparison
//!   and its results folder; [`results`]: what it found (`results.json`).

pub mod charts;
pub mod error;
pub mod latency;
pub mod loadgen;
pub mod machine;
pub mod memory;
pub mod money;
pub mod peers;
pub mod procs;
pub mod report;
pub mod results;
pub mod runner;
pub mod targets;
pub mod tracker;
pub mod workload;
