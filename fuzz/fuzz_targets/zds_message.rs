//! ZDS messages as ztunnel and the node agent receive them (`zds::message`), then the
//! protocol state a stream of requests drives (`ztunnel::inpod::session`).
//!
//! Input: messages, each a selector byte, a length byte and that many bytes. The selector's
//! low two bits pick the decoder (request, hello, ack); bits 2-3 the descriptors attached
//! (none, this process's network namespace, `/dev/null`, two namespaces).
#![no_main]

use std::fs::File;
use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use zds::Request;
use zds::message::{decode_ack, decode_hello, decode_request};
use ztunnel::inpod::session::Session;

fn fds(kind: u8) -> Vec<OwnedFd> {
    let open = |p: &str| File::open(p).map(OwnedFd::from).ok();
    match kind & 0b11 {
        0 => Vec::new(),
        1 => open("/proc/self/ns/net").into_iter().collect(),
        2 => open("/dev/null").into_iter().collect(),
        _ => [open("/proc/self/ns/net"), open("/proc/self/ns/net")]
            .into_iter()
            .flatten()
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new();
    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let fds = fds(selector >> 2);
        match selector & 0b11 {
            0 | 3 => match decode_request(bytes, fds) {
                Ok(request) => {
                    let outcome = match &request {
                        Request::Add { uid, .. } => {
                            session.add(uid);
                            Ok(())
                        }
                        Request::Keep { uid } => session.keep(uid),
                        Request::Del { uid } => {
                            session.del(uid);
                            Ok(())
                        }
                        Request::SnapshotSent => session.snapshot().map(|_| ()),
                    };
                    if let Err(e) = outcome {
                        let _ = e.to_string();
                        session = Session::new();
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            },
            1 => {
                if let Err(e) = decode_hello(bytes, fds) {
                    let _ = e.to_string();
                }
            }
            _ => {
                if let Err(e) = decode_ack(bytes, fds) {
                    let _ = e.to_string();
                }
            }
        }
    }
});
