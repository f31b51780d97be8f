//! The process: command line, signals, the embedded demo, running and reloading.

pub mod busy;
pub mod cli;
pub mod daemon;
pub mod demo;
pub mod drain;
pub mod metrics;
pub mod run;
pub mod signal;
pub mod status;
pub mod trim;
pub mod workers;
