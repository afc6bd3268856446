//! Both backends in a real network namespace: an outbound connection is redirected to 15001
//! with its original destination kept, ztunnel's marked sockets are not, and removal undoes
//! it. Needs root, iproute2, nftables and iptables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use capture::{Backend, Ports};
use socket2::{Domain, SockRef, Socket, Type};
use zds::Netns;

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (these tests need root and iproute2)");
    assert!(ok.success(), "ip {args:?}");
}

/// A namespace with an address on a veth, so 10.9.0.2 is routable (and nobody).
struct Ns(String);

impl Ns {
    fn new(name: &str) -> Ns {
        let name = format!("capture-{name}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        ip(&[
            "-n", &name, "link", "add", "va", "type", "veth", "peer", "name", "vb",
        ]);
        ip(&["-n", &name, "addr", "add", "10.9.0.1/24", "dev", "va"]);
        for link in ["va", "vb", "lo"] {
            ip(&["-n", &name, "link", "set", link, "up"]);
        }
        Ns(name)
    }

    fn netns(&self) -> Netns {
        Netns::open(format!("/var/run/netns/{}", self.0)).unwrap()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Connects to 10.9.0.2:80 from inside, with `mark` on the socket; the original
/// destination seen by the 15001 listener when the connection was redirected there.
fn outbound(mark: Option<u32>) -> Option<SocketAddr> {
    let listener = TcpListener::bind("0.0.0.0:15001").unwrap();
    listener.set_nonblocking(true).unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(m) = mark {
        socket.set_mark(m).unwrap();
    }
    let dst: SocketAddr = "10.9.0.2:80".parse().unwrap();
    let connected = socket.connect_timeout(&dst.into(), Duration::from_millis(300));
    if connected.is_err() {
        return None;
    }
    let _client: TcpStream = socket.into();
    let (accepted, _) = listener.accept().ok()?;
    SockRef::from(&accepted)
        .original_dst_v4()
        .ok()
        .and_then(|a| a.as_socket())
}

#[test]
fn both_backends_redirect_outbound_and_remove_cleanly() {
    for backend in [Backend::Nftables, Backend::Iptables] {
        let ns = Ns::new(&format!("{backend:?}").to_lowercase());
        let netns = ns.netns();
        let got = netns
            .run(|| {
                assert!(!capture::installed());
                capture::install_with(backend, Ports::default(), 0x539).unwrap();
                // Installing twice replaces, it does not stack.
                capture::install_with(backend, Ports::default(), 0x539).unwrap();
                let captured = outbound(None);
                let marked = outbound(Some(0x539));
                let was_installed = capture::installed();
                capture::remove().unwrap();
                let after = outbound(None);
                (captured, marked, was_installed, capture::installed(), after)
            })
            .unwrap();
        let (captured, marked, was_installed, still, after) = got;
        assert_eq!(
            captured,
            Some("10.9.0.2:80".parse().unwrap()),
            "{backend:?}"
        );
        assert_eq!(
            marked, None,
            "{backend:?}: ztunnel's marked socket is not captured"
        );
        assert!(
            was_installed && !still,
            "{backend:?}: installed, then removed"
        );
        assert_eq!(after, None, "{backend:?}: nothing captured after removal");
    }
}
