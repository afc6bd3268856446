//! `meshctl`: the operator's command line. `meshctl local` makes a manifest directory real on
//! this machine: network namespaces for nodes and pods, `meshd`, and per node a `node-agent`
//! and a shared-mode `ztunnel`. `meshctl waypoint` writes, lists and deletes waypoint Gateways
//! in such a directory.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod local;
mod waypoint;

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Operate the mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A whole mesh on this machine, from a manifest directory (needs root).
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Waypoint Gateways in a manifest directory (a running `meshd` or `local up` picks them
    /// up live).
    Waypoint {
        /// The manifest directory (as `meshd --manifests` and `meshctl local up` read it).
        #[arg(long, env = "MESH_MANIFESTS", default_value = ".", global = true)]
        manifests: PathBuf,
        #[command(subcommand)]
        command: waypoint::Command,
    },
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Creates the nodes and pods the manifests describe and runs the mesh on them, until
    /// interrupted (then removes everything). Edits to the directory apply live.
    Up {
        /// The manifest directory (as `meshd --manifests` reads it).
        dir: PathBuf,
        #[command(flatten)]
        opts: local::Options,
    },
    /// Removes everything `up` made (also after a crash).
    Down {
        #[command(flatten)]
        opts: local::Options,
    },
    /// Nodes, pods, whether each pod is captured, and where the logs are.
    Status {
        #[command(flatten)]
        opts: local::Options,
    },
    /// Follows the directory for `up` (started by it, in the background).
    #[command(hide = true)]
    Watch {
        dir: PathBuf,
        #[command(flatten)]
        opts: local::Options,
    },
    /// Runs a command inside a pod's network namespace: `meshctl local exec <ns>/<pod> -- CMD`.
    Exec {
        /// `<namespace>/<pod>`.
        pod: String,
        #[command(flatten)]
        opts: local::Options,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Local { command } => match command {
            LocalCommand::Up { dir, opts } => local::up(&dir, &opts),
            LocalCommand::Down { opts } => local::down(&opts),
            LocalCommand::Status { opts } => local::status(&opts),
            LocalCommand::Watch { dir, opts } => local::watch(&dir, &opts),
            LocalCommand::Exec { pod, opts, command } => {
                let code = local::exec(&opts, &pod, &command)?;
                std::process::exit(code);
            }
        },
        Command::Waypoint { manifests, command } => waypoint::run(&manifests, &command),
    }
}
