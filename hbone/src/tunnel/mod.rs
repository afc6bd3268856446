//! HBONE: TCP tunneled as HTTP/2 CONNECT streams inside mutual TLS.

pub mod client;
pub mod copy;
pub mod io;
pub mod keepalive;
pub mod pool;
mod read_ahead;
pub mod server;
pub mod settings;
pub mod target;
