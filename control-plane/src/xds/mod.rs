//! The delta ADS server: per-client sessions fed by published snapshots.

mod clients;
mod framing;
mod server;
pub mod session;

pub use clients::{ClientInfo, Clients};
pub use server::AdsService;
