//! `meshctl waypoint apply|list|delete`: waypoint Gateways in a manifest directory, the one
//! `meshd --manifests` and `meshctl local up` read, so a running mesh picks edits up live.
//!
//! What each command does, in order:
//! - `apply` builds the Gateway (`gateway.rs`), then: the same object already in the directory
//!   (wherever it is): nothing to do; a different one with that name: refused, or replaced in
//!   place with `--overwrite`; none: written to `waypoint-<ns>-<name>.yaml` (refused when that
//!   file holds other objects). `--enroll-namespace` then labels the Namespace object
//!   `istio.io/use-waypoint=<name>` where it is, or writes `namespace-<ns>.yaml`; another
//!   waypoint already there is replaced only with `--overwrite`.
//! - `list` prints the directory's waypoints (Gateways of class `istio-waypoint`).
//! - `delete` removes waypoint Gateways' documents, leaving the rest of their files, and says
//!   when the namespace still names a deleted waypoint.
//!
//! There is no `--wait`: meshd reports what it serves on its debug port, not per Gateway.

use std::path::Path;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kube_source::{Gateway, Kind, Object, ObjectKey};

mod gateway;
mod store;

use gateway::{FOR_SERVICE_ACCOUNT, For, USE_WAYPOINT, WAYPOINT_CLASS, WAYPOINT_FOR, Waypoint};
use store::{Store, write};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Writes a waypoint Gateway (as `istioctl waypoint generate` prints it) into the
    /// directory.
    Apply(ApplyArgs),
    /// Lists the waypoint Gateways in the directory.
    List(ListArgs),
    /// Removes waypoint Gateways from the directory (only their documents).
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The waypoint's namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The Gateway's name [default: `waypoint`, or `waypoint-<sa>` with --service-account].
    #[arg(long)]
    name: Option<String>,
    /// What may use it (label istio.io/waypoint-for) [default: service, or workload with
    /// --service-account].
    #[arg(long = "for", value_enum)]
    waypoint_for: Option<For>,
    /// Serve the pods running as this service account (annotation
    /// istio.io/for-service-account).
    #[arg(long)]
    service_account: Option<String>,
    /// Also label the Namespace istio.io/use-waypoint=<name> (writing a Namespace manifest if
    /// the directory has none).
    #[arg(long)]
    enroll_namespace: bool,
    /// Replace a different Gateway of that name, or another waypoint on the Namespace.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this namespace's waypoints [default: default].
    #[arg(short, long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Every namespace's waypoints.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The waypoints' namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Every waypoint of the namespace.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// The waypoints to delete.
    #[arg(required_unless_present = "all")]
    names: Vec<String>,
}

pub fn run(dir: &Path, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Apply(a) => apply(dir, a),
        Command::List(a) => list(dir, a),
        Command::Delete(a) => delete(dir, a),
    }
}

fn gateway_key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Gateway,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn apply(dir: &Path, a: &ApplyArgs) -> anyhow::Result<()> {
    let wp = Waypoint::new(
        &a.namespace,
        a.name.as_deref(),
        a.waypoint_for,
        a.service_account.as_deref(),
    )?;
    let (ns, name) = (&wp.namespace, &wp.name);
    let yaml = wp.to_yaml();
    let store = Store::load(dir)?;
    match store.find(&gateway_key(ns, name)) {
        Some(found) if same_yaml(store.document(found), &yaml) => {
            println!("waypoint {ns}/{name} unchanged ({})", store.locate(found));
        }
        Some(found) if !a.overwrite => bail!(
            "a different Gateway {ns}/{name} is already at {}; --overwrite replaces it",
            store.locate(found)
        ),
        Some(found) => {
            let (path, text) = store.replaced(found, &yaml)?;
            write(&path, Some(&text))?;
            println!("waypoint {ns}/{name} replaced at {}", store.locate(found));
        }
        None => {
            let file = format!("waypoint-{ns}-{name}.yaml");
            let path = dir.join(&file);
            let taken = store
                .files
                .iter()
                .position(|f| f.path == path)
                .is_some_and(|i| store.objects.iter().any(|o| o.file == i));
            if taken {
                bail!("{file} already holds other objects: choose another --name or move it");
            }
            write(&path, Some(&yaml))?;
            println!("waypoint {ns}/{name} written to {file}");
        }
    }
    if a.enroll_namespace {
        enroll(dir, &wp, a.overwrite)?;
    }
    Ok(())
}

/// Whether two YAML documents hold the same value (formatting and comments aside).
fn same_yaml(a: &str, b: &str) -> bool {
    let parse = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).ok();
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}

/// Labels the waypoint's Namespace with `istio.io/use-waypoint`.
fn enroll(dir: &Path, wp: &Waypoint, overwrite: bool) -> anyhow::Result<()> {
    let (ns, name) = (&wp.namespace, &wp.name);
    // Read again: the Gateway may have been written to the Namespace's file.
    let store = Store::load(dir)?;
    let key = ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: ns.clone(),
    };
    let Some(found) = store.find(&key) else {
        let file = format!("namespace-{ns}.yaml");
        let path = dir.join(&file);
        if path.exists() {
            bail!("{file} exists but holds no Namespace {ns}: move it, or add the Namespace");
        }
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  labels:\n    {USE_WAYPOINT}: {name}\n  \
             name: {ns}\n"
        );
        write(&path, Some(&yaml))?;
        println!("namespace {ns} written to {file}, labeled {USE_WAYPOINT}={name}");
        return Ok(());
    };
    let at = store.locate(found);
    match found.object.meta().labels.get(USE_WAYPOINT) {
        Some(v) if v == name => {
            println!("namespace {ns} already uses waypoint {name} ({at})");
            return Ok(());
        }
        Some(v) if !overwrite => {
            bail!("namespace {ns} already uses waypoint {v:?} ({at}); --overwrite relabels it")
        }
        _ => {}
    }
    let mut value: serde_yaml::Value = serde_yaml::from_str(store.document(found))
        .with_context(|| format!("reading Namespace {ns} at {at}"))?;
    let labels = value
        .get_mut("metadata")
        .and_then(serde_yaml::Value::as_mapping_mut)
        .map(|m| {
            let labels = m
                .entry("labels".into())
                .or_insert(serde_yaml::Value::Mapping(Default::default()));
            if !labels.is_mapping() {
                *labels = serde_yaml::Value::Mapping(Default::default());
            }
            labels
        })
        .and_then(serde_yaml::Value::as_mapping_mut)
        .with_context(|| format!("Namespace {ns} at {at} has no metadata mapping"))?;
    labels.insert(USE_WAYPOINT.into(), name.as_str().into());
    let yaml = serde_yaml::to_string(&value).context("writing the Namespace")?;
    let (path, text) = store.replaced(found, &yaml)?;
    write(&path, Some(&text))?;
    println!("namespace {ns} labeled {USE_WAYPOINT}={name} ({at})");
    Ok(())
}

/// The directory's waypoints (in `namespace`, or all), by namespace and name.
fn waypoints<'s>(store: &'s Store, namespace: Option<&str>) -> Vec<(&'s Gateway, usize)> {
    let mut out: Vec<(&Gateway, usize)> = store
        .objects
        .iter()
        .filter_map(|f| match &f.object {
            Object::Gateway(g) if g.spec.gateway_class_name == WAYPOINT_CLASS => Some((g, f.file)),
            _ => None,
        })
        .filter(|(g, _)| namespace.is_none_or(|ns| g.metadata.namespace == ns))
        .collect();
    out.sort_by(|(a, _), (b, _)| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    // The same key twice: meshd takes the first in path order, and so do we.
    out.dedup_by(|(a, _), (b, _)| {
        (&a.metadata.namespace, &a.metadata.name) == (&b.metadata.namespace, &b.metadata.name)
    });
    out
}

fn list(dir: &Path, a: &ListArgs) -> anyhow::Result<()> {
    let store = Store::load(dir)?;
    let namespace = match (&a.namespace, a.all_namespaces) {
        (_, true) => None,
        (Some(ns), false) => Some(ns.as_str()),
        (None, false) => Some("default"),
    };
    let found = waypoints(&store, namespace);
    if found.is_empty() {
        match namespace {
            Some(ns) => eprintln!("no waypoints in namespace {ns} ({})", dir.display()),
            None => eprintln!("no waypoints in {}", dir.display()),
        }
        return Ok(());
    }
    let mut rows = vec![[
        "NAMESPACE".to_string(),
        "NAME".into(),
        "FOR".into(),
        "SERVICE-ACCOUNT".into(),
        "FILE".into(),
    ]];
    for (g, file) in found {
        let m = &g.metadata;
        rows.push([
            m.namespace.clone(),
            m.name.clone(),
            m.labels
                .get(WAYPOINT_FOR)
                .map_or("service", String::as_str)
                .to_string(),
            m.annotations
                .get(FOR_SERVICE_ACCOUNT)
                .map_or("-", String::as_str)
                .to_string(),
            store.relative(file),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Columns padded to their widest cell, three spaces apart, as kubectl prints.
fn table(rows: &[[String; 5]]) -> String {
    let mut widths = [0; 5];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn delete(dir: &Path, a: &DeleteArgs) -> anyhow::Result<()> {
    let ns = a.namespace.as_str();
    let store = Store::load(dir)?;
    let names: Vec<String> = if a.all {
        waypoints(&store, Some(ns))
            .iter()
            .map(|(g, _)| g.metadata.name.clone())
            .collect()
    } else {
        for name in &a.names {
            match store.find(&gateway_key(ns, name)).map(|f| &f.object) {
                None => bail!("no waypoint {ns}/{name} in {}", dir.display()),
                Some(Object::Gateway(g)) if g.spec.gateway_class_name != WAYPOINT_CLASS => bail!(
                    "Gateway {ns}/{name} is not a waypoint (gatewayClassName {:?}): not deleted",
                    g.spec.gateway_class_name
                ),
                Some(_) => {}
            }
        }
        a.names.clone()
    };
    if names.is_empty() {
        eprintln!("no waypoints in namespace {ns} ({})", dir.display());
        return Ok(());
    }
    for name in &names {
        // Read again each time: an earlier deletion may have moved this one in its file.
        let store = Store::load(dir)?;
        let Some(found) = store.find(&gateway_key(ns, name)) else {
            continue;
        };
        let (path, text) = store.removed(found)?;
        let gone = text.is_none();
        write(&path, text.as_deref())?;
        let file = store.relative(found.file);
        if gone {
            println!("waypoint {ns}/{name} deleted ({file} removed)");
        } else {
            println!("waypoint {ns}/{name} deleted from {file}");
        }
    }
    let store = Store::load(dir)?;
    let namespace = ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: ns.to_string(),
    };
    if let Some(found) = store.find(&namespace) {
        let used = found.object.meta().labels.get(USE_WAYPOINT);
        if let Some(used) = used.filter(|u| names.contains(u)) {
            eprintln!(
                "note: namespace {ns} still has {USE_WAYPOINT}={used} ({}): meshd will warn \
                 that the waypoint does not exist",
                store.locate(found)
            );
        }
    }
    Ok(())
}
