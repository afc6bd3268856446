//! The standard test topology: a client and a server workload, each in its own namespace
//! with its own dedicated ztunnel, plus an outsider host outside the mesh.
//!
//! | host     | IP                       | mesh                                    |
//! |----------|--------------------------|-----------------------------------------|
//! | client   | 10.244.0.1, fd00:e2e::1  | `demo/client`, sa `client`, node-a      |
//! | server   | 10.244.0.2, fd00:e2e::2  | `demo/server`, sa `server`, node-b      |
//! | outsider | 10.244.0.3, fd00:e2e::3  | none (unknown address)                  |
//! | bare     | 10.244.0.4, fd00:e2e::4  | none: for direct baselines              |
//! | meshd    | 10.244.0.10              | the control plane (with `Options::meshd`) |
//!
//! Service `server.demo.svc.cluster.local` has VIP 10.96.0.10, port 80 -> 8080.
//!
//! The ztunnels read a local config file (below) and the test CA, or, with
//! [`Options::meshd`], get both only from `meshd` serving a manifest directory that describes
//! this same layout (`examples/mesh` does, with a third pod `demo/other` at [`OTHER_IP`] on
//! node-a).

use std::path::{Path, PathBuf};

use crate::mesh::{Binaries, Mesh, Ztunnel, workload_yaml};
use crate::meshd::Meshd;
use crate::netns::{Host, Net};

pub const CLIENT_IP: &str = "10.244.0.1";
pub const SERVER_IP: &str = "10.244.0.2";
pub const OUTSIDER_IP: &str = "10.244.0.3";
pub const BARE_IP: &str = "10.244.0.4";
/// The example's third pod, `demo/other` (node-a): a workload its policy refuses.
pub const OTHER_IP: &str = "10.244.0.5";
pub const MESHD_IP: &str = "10.244.0.10";
pub const CLIENT_NODE: &str = "node-a";
pub const SERVER_NODE: &str = "node-b";
pub const SERVER_IP6: &str = "fd00:e2e::2";
const CLIENT_IP6: &str = "fd00:e2e::1";
pub const VIP: &str = "10.96.0.10";
pub const SERVICE_HOST: &str = "server.demo.svc.cluster.local";

/// `examples/mesh`: the manifests of this layout that a user runs (and the demo serves).
pub fn example_manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("mesh")
}

/// The mesh config; `server_sa` is the server's service account as this config states it.
pub fn config(server_sa: &str) -> String {
    config_with(server_sa, "", "")
}

/// The mesh config with extra lines for the server workload entry (e.g. its
/// `authorizationPolicies`) and a `policies:` section body.
pub fn config_with(server_sa: &str, server_extra: &str, policies: &str) -> String {
    let mut s = String::from("workloads:\n");
    s += &workload_yaml(
        "client",
        "demo",
        "client",
        &format!("\"{CLIENT_IP}\", \"{CLIENT_IP6}\""),
        "HBONE",
        "",
    );
    s += &workload_yaml(
        "server",
        "demo",
        server_sa,
        &format!("\"{SERVER_IP}\", \"{SERVER_IP6}\""),
        "HBONE",
        &format!("\"demo/{SERVICE_HOST}\": {{80: 8080}}"),
    );
    s += server_extra;
    if !policies.is_empty() {
        s += "policies:\n";
        s += policies;
    }
    s += &format!(
        "services:\n- name: server\n  namespace: demo\n  hostname: {SERVICE_HOST}\n  vips: [\"/{VIP}\"]\n  ports: {{80: 8080}}\n"
    );
    s
}

/// Knobs for [`TwoWorkloads::start`].
#[derive(Default)]
pub struct Options<'a> {
    /// Extra environment for both ztunnels.
    pub env: Vec<(&'a str, &'a str)>,
    /// The server's service account as the client's config states it (default: the real one).
    pub client_view_of_server_sa: Option<&'a str>,
    /// Run `meshd` on the `meshd` host serving this manifest directory, and configure both
    /// ztunnels only through it (no local config, no CA directory).
    pub meshd: Option<&'a Path>,
    /// With `meshd`: its MeshConfig file (`--mesh-config`).
    pub mesh_config: Option<&'a Path>,
}

pub struct TwoWorkloads {
    // Field order is drop order: processes go before their namespaces.
    pub meshd: Option<Meshd>,
    pub mesh: Mesh,
    pub zt_client: Ztunnel,
    pub zt_server: Ztunnel,
    pub client: Host,
    pub server: Host,
    pub outsider: Host,
    pub bare: Host,
    pub net: Net,
}

impl TwoWorkloads {
    pub fn start(test: &str, bins: Binaries, opts: Options<'_>) -> anyhow::Result<TwoWorkloads> {
        let mut net = Net::new(test)?;
        let client = net.host("client", CLIENT_IP)?;
        let server = net.host("server", SERVER_IP)?;
        let outsider = net.host("outsider", OUTSIDER_IP)?;
        let bare = net.host("bare", BARE_IP)?;
        let mut mesh = Mesh::new(test, bins)?;
        let (meshd, zt_server, zt_client) = match opts.meshd {
            Some(manifests) => {
                if opts.client_view_of_server_sa.is_some() {
                    anyhow::bail!("client_view_of_server_sa needs local config, not meshd");
                }
                let host = net.host("meshd", MESHD_IP)?;
                let meshd = Meshd::start_with(
                    &mesh.bins,
                    &host,
                    &mesh.dir.join("meshd"),
                    manifests,
                    opts.mesh_config,
                )?;
                let zt_server = mesh.start_ztunnel_xds(
                    &server,
                    "demo/server/server",
                    SERVER_NODE,
                    &meshd,
                    &opts.env,
                )?;
                let zt_client = mesh.start_ztunnel_xds(
                    &client,
                    "demo/client/client",
                    CLIENT_NODE,
                    &meshd,
                    &opts.env,
                )?;
                (Some(meshd), zt_server, zt_client)
            }
            None => {
                let server_config = mesh.write("server.yaml", &config("server"))?;
                let client_config = mesh.write(
                    "client.yaml",
                    &config(opts.client_view_of_server_sa.unwrap_or("server")),
                )?;
                let zt_server =
                    mesh.start_ztunnel(&server, "demo/server/server", &server_config, &opts.env)?;
                let zt_client =
                    mesh.start_ztunnel(&client, "demo/client/client", &client_config, &opts.env)?;
                (None, zt_server, zt_client)
            }
        };
        Ok(TwoWorkloads {
            meshd,
            mesh,
            zt_client,
            zt_server,
            client,
            server,
            outsider,
            bare,
            net,
        })
    }
}

impl TwoWorkloads {
    /// Starts a `meshapp` server in `host` and waits until it listens.
    pub fn serve(&mut self, host: &Host, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self.mesh.spawn_app(host, name, args)?;
        crate::mesh::wait_for_file(&out, "listening", std::time::Duration::from_secs(30))?;
        Ok(())
    }

    /// An echo server on the server host, port `port`.
    pub fn serve_echo(&mut self, port: u16) -> anyhow::Result<()> {
        let server = self.server.clone();
        let listen = format!("0.0.0.0:{port}");
        self.serve(
            &server,
            &format!("echo{port}"),
            &["echo", "--listen", &listen],
        )
    }

    /// `roundtrip` from the client: sends `message`, returns what came back.
    pub fn roundtrip(&self, target: &str, message: &str) -> anyhow::Result<String> {
        let out = self.mesh.run_app(
            &self.client,
            &["roundtrip", "--connect", target, "--message", message],
            std::time::Duration::from_secs(30),
        )?;
        Ok(out
            .trim()
            .strip_prefix("received: ")
            .unwrap_or(out.trim())
            .to_string())
    }
}
