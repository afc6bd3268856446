//! End-to-end test support: network-namespace hosts, a mesh of ztunnel processes (configured
//! by local files or by the `meshd` control plane), and the test application (`meshapp`) they
//! carry traffic for.

pub mod app;
pub mod capture;
pub mod load;
pub mod local;
pub mod mesh;
pub mod meshd;
pub mod netns;
pub mod procfs;
pub mod topology;
