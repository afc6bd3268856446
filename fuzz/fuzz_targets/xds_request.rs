//! What meshd does with a client's `DeltaDiscoveryRequest`s (`Session::on_request`), then with
//! the next snapshot (`Session::on_snapshot`). The input is a sequence of length-delimited
//! requests on one stream, as a client would send them.
#![no_main]

use std::sync::OnceLock;

use control_plane::resources::{Resource, Resources};
use control_plane::snapshot::{Delta, Snapshot};
use control_plane::xds::session::Session;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::discovery::DeltaDiscoveryRequest;
use proto::security::Authorization;
use proto::workload::{Address, Workload, address};

fn workload(uid: &str, ip: [u8; 4]) -> Resource {
    let w = Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "shop".into(),
        addresses: vec![ip.to_vec().into()],
        ..Default::default()
    };
    let a = Address {
        r#type: Some(address::Type::Workload(w)),
    };
    let alias = format!("/{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    Resource::new(uid.into(), vec![alias], &a)
}

fn policy(name: &str, dry_run: bool) -> Resource {
    let a = Authorization {
        name: name.into(),
        namespace: "shop".into(),
        dry_run,
        ..Default::default()
    };
    Resource::new(format!("shop/{name}"), vec![], &a)
}

fn resources(rs: &[Resource], ps: &[Resource]) -> Resources {
    let mut r = Resources::default();
    for x in rs {
        r.insert_address(x.clone());
    }
    for p in ps {
        r.insert_authorization(p.clone());
    }
    r
}

/// Version 1, and version 2 with one change, one removal and one addition per type.
fn snapshots() -> &'static (Snapshot, Snapshot) {
    static SNAPSHOTS: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        let first = Snapshot {
            version: 1,
            resources: resources(
                &[workload("a", [10, 0, 0, 1]), workload("b", [10, 0, 0, 2])],
                &[policy("p", false), policy("q", false)],
            ),
            ..Default::default()
        };
        let next = resources(
            &[workload("a", [10, 0, 0, 9]), workload("c", [10, 0, 0, 3])],
            &[policy("p", true), policy("r", false)],
        );
        let second = Snapshot {
            version: 2,
            delta: Some(Delta::between(1, &first.resources, &next)),
            resources: next,
            ..Default::default()
        };
        (first, second)
    })
}

fuzz_target!(|data: &[u8]| {
    let (first, second) = snapshots();
    let mut session = Session::new();
    let mut buf = data;
    for _ in 0..8 {
        if buf.is_empty() {
            break;
        }
        let Ok(req) = DeltaDiscoveryRequest::decode_length_delimited(&mut buf) else {
            break;
        };
        let _ = session.on_request(req, first);
    }
    let _ = session.on_snapshot(second);
    // Up to date: the same snapshot again sends nothing.
    assert!(session.on_snapshot(second).is_empty());
    for t in session.types().map(str::to_string).collect::<Vec<_>>() {
        let _ = session.held(&t);
    }
});
