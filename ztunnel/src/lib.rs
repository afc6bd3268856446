//! ztunnel: captures a workload's TCP and carries it over HBONE to the destination's ztunnel.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod drain;
pub mod http;
pub mod inpod;
pub mod metrics;
pub mod proxy;
pub mod readiness;
pub mod route;
pub mod socket;
pub mod state;
pub mod xds;
