//! Objects -> xDS resources, the way istiod builds them for ztunnel.
//!
//! CONTRACT (kept by the implementation): `translate` is pure and total: it never fails as a
//! whole; an object that cannot be translated is left out and reported in
//! `Translation::errors`, everything else is still produced.
//!
//! Order of work, each step once per call so a translation stays linear in the objects
//! (it runs on every change, over up to 10,000 pods, 1,000 services and 1,000 policies):
//! 1. policies (`policy.rs`): every AuthorizationPolicy and PeerAuthentication is parsed once
//!    by the `authz` crate, published as Authorization resources (`authorization.rs` converts
//!    the model to the wire type), and indexed by namespace and selector;
//! 2. lookups: namespaces by name, Gateways by name and the service accounts waypoints claim
//!    (`waypoint.rs`, which also warns once per conflicting claim), pod-selecting Services by
//!    namespace and selector (`service.rs`), so no pod is compared with every Service or
//!    every policy;
//! 3. Services (`service.rs`), then Pods (`workload.rs`), as Address resources encoded so
//!    equal content always has equal bytes (`encode.rs`);
//! 4. for waypoints, in the same passes: policies with `targetRefs` as HttpPolicy resources
//!    and where they attach (`waypoint_policy.rs`, `http_policy.rs`), the Services and Pods
//!    bound to each waypoint as Target resources (`waypoint_target.rs`) with the JWT rules of
//!    the RequestAuthentications attached to them (`waypoint_jwt.rs`), then each waypoint's
//!    set: its targets and the policies they name;
//! 5. the mesh config's tracing and Telemetry, resolved against the index into the Tracing
//!    resource: the mesh's, and a waypoint's own where a Telemetry sets one (`tracing.rs`).
//!
//! Warnings about a namespace-wide binding (a namespace's waypoint that does not exist) are
//! reported once for the Namespace, not once per pod.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{AddrParseError, IpAddr};
use std::sync::Arc;

use kube_source::{Kind, Namespace, ObjectKey};

use crate::index::Index;
use crate::mesh_config::MeshConfig;
use crate::resources::{
    GATEWAY_NAME_LABEL, Resource, ResourceSet, Resources, WAYPOINT_TYPE_URLS, WaypointResources,
    diff,
};

mod attach;
mod authorization;
mod encode;
mod ext_authz;
mod http_policy;
pub(crate) mod labels;
mod policy;
mod rate_limit;
mod service;
mod tracing;
pub(crate) mod waypoint;
mod waypoint_jwt;
mod waypoint_policy;
mod waypoint_target;
mod workload;

#[cfg(test)]
mod tests;

pub use authorization::to_proto as authorization_to_proto;
pub use http_policy::to_proto as http_policy_to_proto;
pub use workload::{uid as workload_uid, workload_name_and_type};

/// Mesh-wide settings the translation depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `CLUSTER_ID` (istiod default `Kubernetes`); part of workload uids.
    pub cluster_id: String,
    pub trust_domain: String,
    /// meshConfig `rootNamespace` (default `istio-system`).
    pub root_namespace: String,
    /// Network of every workload and VIP (empty = the default network).
    pub network: String,
    /// Service hostname suffix: `<name>.<ns>.svc.<domain_suffix>`.
    pub domain_suffix: String,
    /// istiod `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY`.
    pub enable_dry_run: bool,
    /// MeshConfig: the extension providers CUSTOM policies name.
    pub mesh: MeshConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_id: "Kubernetes".into(),
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            network: String::new(),
            domain_suffix: "cluster.local".into(),
            enable_dry_run: false,
            mesh: MeshConfig::default(),
        }
    }
}

/// The outcome of one translation.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    pub resources: Resources,
    /// Names (type URL -> names) added, changed or removed since the previous call of the
    /// same [`Translator`]; every name on its first call.
    pub changed: HashMap<String, Vec<Arc<str>>>,
    /// Objects left out, with the reason (e.g. an AuthorizationPolicy Istio would reject).
    pub errors: Vec<(ObjectKey, String)>,
    /// Objects translated with a caveat (e.g. L7 rules dropped for ztunnel).
    pub warnings: Vec<(ObjectKey, String)>,
    /// Mesh config settings translated with a caveat (e.g. a tracing collector that does not
    /// resolve); about no object.
    pub mesh_warnings: Vec<String>,
}

impl Translation {
    /// Whether anything served changed since the previous call.
    pub fn unchanged(&self) -> bool {
        self.changed.values().all(Vec::is_empty)
    }
}

/// Why one object was left out.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{field}: {value:?} is not an IP address")]
    BadIp {
        field: &'static str,
        value: String,
        #[source]
        source: AddrParseError,
    },
}

/// Everything a Service or Pod is translated against, built once per call.
#[derive(Debug)]
pub(crate) struct Catalog<'a> {
    opts: &'a Options,
    namespaces: HashMap<&'a str, &'a Namespace>,
    waypoints: waypoint::Waypoints<'a>,
    services: service::SelectingServices<'a>,
    bindings: policy::Bindings<'a>,
    /// Which waypoint policies attach to which targets.
    attachments: &'a waypoint_policy::Attachments,
    /// Which rate limits attach to which targets.
    rate_limits: &'a rate_limit::RateLimits,
    /// Which RequestAuthentication rules attach to which targets.
    jwt: &'a waypoint_jwt::JwtAttachments,
}

/// Translates every object in `index`.
pub fn translate(index: &Index, opts: &Options) -> Translation {
    Translator::new(opts.clone()).translate(index, &Scope::All)
}

/// Which namespaces' Services and Pods to translate again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Only these; every other namespace keeps its Address resources from the last call.
    /// Correct when every change since then was a namespaced object outside the root
    /// namespace that is not a Gateway (those can affect pods of other namespaces).
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// Whether objects of `namespace` may have changed.
    pub fn includes(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(set) => set.contains(namespace),
        }
    }
}

/// What one namespace's Services and Pods produced.
#[derive(Debug, Default)]
struct NamespaceOutput {
    addresses: Vec<Resource>,
    /// Its Services and Pods bound to waypoints, as Target resources.
    targets: Vec<waypoint_target::TargetOutput>,
    /// `(pod, Gateway name)` of its pods labelled with the Gateway they serve (waypoints).
    waypoint_pods: Vec<(String, String)>,
    errors: Vec<(ObjectKey, String)>,
    warnings: Vec<(ObjectKey, String)>,
}

impl NamespaceOutput {
    /// Whether anything here goes into the waypoints' resources.
    fn for_waypoints(&self) -> bool {
        !self.targets.is_empty() || !self.waypoint_pods.is_empty()
    }
}

/// A translation that remembers what it can reuse: each policy's parse (the costliest step,
/// redone only when the object changes), each namespace's Address and Target resources, and
/// the whole published set, patched in place, so a change inside one namespace costs that
/// namespace, not the mesh, and the names that changed fall out without comparing every
/// resource.
///
/// The waypoints' sets are gathered again from every namespace's targets, but only when a
/// change touched targets or waypoint policies (a walk over the targets, no encoding). A
/// change of where waypoint policies attach redoes every namespace that has targets (their
/// `policies` lists may change); a change of a policy's rules alone redoes none.
#[derive(Debug)]
pub struct Translator {
    opts: Options,
    policies: policy::Memo,
    waypoint_policies: waypoint_policy::Memo,
    /// Where waypoint policies attached on the last call.
    attachments: waypoint_policy::Attachments,
    /// The rate limits of the last call, by where they attach.
    rate_limits: rate_limit::RateLimits,
    /// The RequestAuthentication rules of the last call, and where they attached.
    jwt: waypoint_jwt::JwtAttachments,
    namespaces: BTreeMap<String, NamespaceOutput>,
    /// What the last call returned.
    resources: Resources,
    /// The waypoint HttpPolicy resources of the last call.
    http_policies: ResourceSet,
}

impl Translator {
    pub fn new(opts: Options) -> Self {
        Translator {
            opts,
            policies: policy::Memo::default(),
            waypoint_policies: waypoint_policy::Memo::default(),
            attachments: waypoint_policy::Attachments::default(),
            rate_limits: rate_limit::RateLimits::default(),
            jwt: waypoint_jwt::JwtAttachments::default(),
            namespaces: BTreeMap::new(),
            resources: Resources::default(),
            http_policies: ResourceSet::new(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// A new mesh config (its file changed). The next call must be [`Scope::All`]: what the
    /// mesh config feeds (CUSTOM providers, tracing) is resolved again at every call, but
    /// only `All` is sure to visit it all.
    pub fn set_mesh(&mut self, mesh: MeshConfig) {
        self.opts.mesh = mesh;
    }

    /// Translates `index`, redoing the Services and Pods of the namespaces in `scope`.
    pub fn translate(&mut self, index: &Index, scope: &Scope) -> Translation {
        let opts = &self.opts;
        let mut out = Translation::default();
        let parsed = policy::parse(index, opts, scope, &mut out, &mut self.policies);
        let waypoints = waypoint::Waypoints::new(index, opts);
        out.warnings.extend(waypoints.warnings().iter().cloned());
        let for_waypoints = waypoint_policy::parse(
            index,
            opts,
            scope,
            &waypoints,
            &mut out,
            &mut self.waypoint_policies,
        );
        let rate_limits = rate_limit::parse(index, opts, &waypoints, &mut out);
        let jwt = waypoint_jwt::parse(index, opts, &waypoints, &mut out);
        let cat = Catalog {
            opts,
            namespaces: index
                .namespaces()
                .map(|n| (n.metadata.name.as_str(), n))
                .collect(),
            waypoints,
            services: service::SelectingServices::new(index, opts),
            bindings: parsed.bindings(&opts.root_namespace),
            attachments: &for_waypoints.attachments,
            rate_limits: &rate_limits,
            jwt: &jwt,
        };
        let mut redo: BTreeSet<String> = match scope {
            // Every namespace with something to translate, and every one that had something.
            Scope::All => index
                .services()
                .map(|s| s.metadata.namespace.clone())
                .chain(index.pods().map(|p| p.metadata.namespace.clone()))
                .chain(self.namespaces.keys().cloned())
                .collect(),
            Scope::Namespaces(set) => set.clone(),
        };
        if for_waypoints.attachments != self.attachments
            || rate_limits != self.rate_limits
            || jwt != self.jwt
        {
            redo.extend(
                self.namespaces
                    .iter()
                    .filter(|(_, o)| !o.targets.is_empty())
                    .map(|(ns, _)| ns.clone()),
            );
        }
        // Authorizations are few (one per policy) and come whole from `policy::parse`.
        let changed_policies = diff(
            &self.resources.authorizations,
            &out.resources.authorizations,
        )
        .collect();
        self.resources.authorizations = std::mem::take(&mut out.resources.authorizations);
        let mut changed_addresses = Vec::new();
        let mut waypoints_touched = diff(&self.http_policies, &for_waypoints.resources)
            .next()
            .is_some();
        for ns in redo {
            let new = translate_namespace(index, &cat, &ns);
            let old = self.namespaces.remove(&ns).unwrap_or_default();
            patch(
                &mut self.resources.addresses,
                &old.addresses,
                &new.addresses,
                &mut changed_addresses,
            );
            waypoints_touched |= old.for_waypoints() || new.for_waypoints();
            let empty =
                new.addresses.is_empty() && new.errors.is_empty() && new.warnings.is_empty();
            if !empty || new.for_waypoints() {
                self.namespaces.insert(ns, new);
            }
        }
        for o in self.namespaces.values() {
            out.errors.extend(o.errors.iter().cloned());
            out.warnings.extend(o.warnings.iter().cloned());
        }
        out.changed = HashMap::from([
            (proto::ADDRESS_TYPE_URL.to_string(), changed_addresses),
            (proto::AUTHORIZATION_TYPE_URL.to_string(), changed_policies),
        ]);
        for type_url in WAYPOINT_TYPE_URLS {
            out.changed.insert(type_url.to_string(), Vec::new());
        }
        if waypoints_touched {
            let next = gather_waypoints(&self.namespaces, &for_waypoints.resources);
            for type_url in WAYPOINT_TYPE_URLS {
                let changed =
                    WaypointResources::changed(&self.resources.waypoints, &next, type_url);
                out.changed.insert(type_url.to_string(), changed);
            }
            self.resources.waypoints = Arc::new(next);
        }
        self.attachments = for_waypoints.attachments;
        self.rate_limits = rate_limits;
        self.jwt = jwt;
        self.http_policies = for_waypoints.resources;
        // The Tracing: small resources, resolved at every call (a collector's Service may come
        // or go in any namespace).
        let resolved = tracing::resolve(index, &self.opts);
        out.mesh_warnings.extend(resolved.mesh_warning);
        out.warnings.extend(resolved.warnings);
        let set = |t: proto::waypoint::Tracing| -> ResourceSet {
            let r = Resource::new(proto::WAYPOINT_TRACING_NAME.to_string(), Vec::new(), &t);
            [(r.name.clone(), r)].into()
        };
        let next: ResourceSet = resolved.mesh.map(set).unwrap_or_default();
        let per_waypoint: BTreeMap<crate::resources::WaypointKey, ResourceSet> = resolved
            .waypoints
            .into_iter()
            .map(|(w, t)| (w, set(t)))
            .collect();
        let mut changed_tracing: Vec<Arc<str>> = diff(&self.resources.tracing, &next).collect();
        if changed_tracing.is_empty() && per_waypoint != self.resources.waypoint_tracing {
            // A waypoint's own one changed: the one name, compared again per client.
            changed_tracing.push(proto::WAYPOINT_TRACING_NAME.into());
        }
        out.changed.insert(
            proto::WAYPOINT_TRACING_TYPE_URL.to_string(),
            changed_tracing,
        );
        self.resources.waypoint_tracing = per_waypoint;
        self.resources.tracing = next;
        out.resources = self.resources.clone();
        out
    }
}

/// Each waypoint's set: the targets bound to it, and the translated policies they name.
fn gather_waypoints(
    namespaces: &BTreeMap<String, NamespaceOutput>,
    policies: &ResourceSet,
) -> WaypointResources {
    let mut out = WaypointResources::default();
    for (ns, o) in namespaces {
        for (pod, gateway) in &o.waypoint_pods {
            out.pods.insert((ns.clone(), pod.clone()), gateway.clone());
        }
        for t in &o.targets {
            let sets = out.by_waypoint.entry(t.waypoint.clone()).or_default();
            sets.targets
                .insert(t.resource.name.clone(), t.resource.clone());
            for p in t.policies.iter().filter_map(|k| policies.get(k.as_str())) {
                sets.policies.insert(p.name.clone(), p.clone());
            }
        }
    }
    out
}

/// Replaces one namespace's resources in `set` (`old` by `new`), appending to `changed` the
/// names that were added, changed or removed. Names are unique to their namespace (a uid or
/// `namespace/hostname`), so no other namespace's resource is touched.
fn patch(set: &mut ResourceSet, old: &[Resource], new: &[Resource], changed: &mut Vec<Arc<str>>) {
    let kept: HashSet<&str> = new.iter().map(|r| &*r.name).collect();
    for r in old.iter().filter(|r| !kept.contains(&*r.name)) {
        if set.remove(&*r.name).is_some() {
            changed.push(r.name.clone());
        }
    }
    for r in new {
        if set.get(&*r.name).is_none_or(|o| !o.same_as(r)) {
            changed.push(r.name.clone());
        }
        set.insert(r.name.clone(), r.clone());
    }
}

/// The Services, then the Pods, of one namespace.
fn translate_namespace(index: &Index, cat: &Catalog<'_>, namespace: &str) -> NamespaceOutput {
    let mut out = NamespaceOutput::default();
    let mut warnings = Warnings::default();
    let mut targets = waypoint_target::Targets::new(cat.attachments, cat.rate_limits, cat.jwt);
    let ns = cat.namespaces.get(namespace).copied();
    for svc in index
        .services_in(namespace)
        .filter(|s| service::published(s))
    {
        match service::translate(svc, ns, &cat.waypoints, cat.opts) {
            Ok(t) => {
                warnings.add(&mut out.warnings, t.warning);
                if let Some(waypoint) = &t.gateway {
                    targets.service(svc, &t.service, waypoint);
                }
                out.addresses
                    .push(encode::service_resource(t.service, t.aliases));
            }
            Err(e) => out
                .errors
                .push((object_key(Kind::Service, &svc.metadata), e.to_string())),
        }
    }
    for pod in index.pods_in(namespace) {
        if let Some(gateway) = pod.metadata.labels.get(GATEWAY_NAME_LABEL) {
            out.waypoint_pods
                .push((pod.metadata.name.clone(), gateway.clone()));
        }
        match workload::translate(pod, cat) {
            Ok(Some(t)) => {
                warnings.add(&mut out.warnings, t.warning);
                targets.workload(&t.workload, t.gateway.as_ref());
                out.addresses
                    .push(encode::workload_resource(t.workload, t.aliases));
            }
            Ok(None) => {}
            Err(e) => out
                .errors
                .push((object_key(Kind::Pod, &pod.metadata), e.to_string())),
        }
    }
    out.targets = targets.finish();
    out
}

/// Per-object warnings as they come, namespace-wide ones once each.
#[derive(Default)]
struct Warnings {
    namespace_seen: BTreeSet<(ObjectKey, String)>,
}

impl Warnings {
    fn add(&mut self, out: &mut Vec<(ObjectKey, String)>, w: Option<(ObjectKey, String)>) {
        let Some(w) = w else { return };
        if w.0.kind == Kind::Namespace && !self.namespace_seen.insert(w.clone()) {
            return;
        }
        out.push(w);
    }
}

fn object_key(kind: Kind, m: &kube_source::Meta) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: m.namespace.clone(),
        name: m.name.clone(),
    }
}

/// An address as the wire wants it: 4 or 16 raw bytes.
fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}
