//! A network namespace held open by a file descriptor.
//!
//! A namespace descriptor comes from `/proc/<pid>/ns/net`, a bind mount of one
//! (`/var/run/netns/<name>`), or a ZDS `AddWorkload`. Holding it keeps the namespace alive.
//! [`Netns::run`] runs a closure inside it on a helper thread: `setns` changes only the
//! calling thread, so the helper is entered and dropped, and the caller (a tokio worker) never
//! changes namespace. Sockets created there stay in that namespace for good.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// A network namespace, by descriptor.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    /// The namespace's inode as `net:[<inode>]`, for logs and equality.
    id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the descriptor is not a network namespace (it is {0:?})")]
    NotNetns(String),
    #[error("cannot inspect the descriptor")]
    Inspect(#[source] std::io::Error),
    #[error("entering network namespace {id}")]
    Enter {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the helper thread in network namespace {0} panicked")]
    Helper(String),
}

impl Netns {
    /// Opens a namespace by path (`/proc/<pid>/ns/net`, `/var/run/netns/<name>`).
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NetnsError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Netns::from_fd(file.into())
    }

    /// The namespace this process's main thread is in.
    pub fn current() -> Result<Netns, NetnsError> {
        Netns::open("/proc/self/ns/net")
    }

    /// Takes a descriptor received from elsewhere, checking it names a network namespace:
    /// a helper thread enters it, asking the kernel for a network namespace (`setns` with
    /// `CLONE_NEWNET` refuses any other descriptor). The path a descriptor was opened by says
    /// nothing (`/var/run/netns/<name>` is a bind mount), so it is not what is checked.
    pub fn from_fd(fd: OwnedFd) -> Result<Netns, NetnsError> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| NetnsError::Inspect(e.into()))?;
        let id = format!("net:[{}]", stat.st_ino);
        let entered = std::thread::scope(|scope| {
            scope
                .spawn(|| move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network)))
                .join()
        });
        match entered {
            Ok(Ok(())) => Ok(Netns { fd, id }),
            Ok(Err(_)) => Err(NetnsError::NotNetns(
                describe(fd.as_fd()).unwrap_or_else(|e| format!("unknown: {e}")),
            )),
            Err(_) => Err(NetnsError::Helper(id)),
        }
    }

    /// Another descriptor of the same namespace.
    pub fn try_clone(&self) -> Result<Netns, NetnsError> {
        Ok(Netns {
            fd: self.fd.try_clone().map_err(NetnsError::Inspect)?,
            id: self.id.clone(),
        })
    }

    /// `net:[<inode>]`: equal for two descriptors of the same namespace (as `ip netns identify`
    /// and `/proc/<pid>/ns/net` show it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `f` on a new thread inside this namespace and returns what it returns. `f` must
    /// not block for long: it holds a thread.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            let helper = scope.spawn(|| {
                move_into_link_name_space(self.fd.as_fd(), Some(LinkNameSpaceType::Network))
                    .map_err(|e| NetnsError::Enter {
                        id: self.id.clone(),
                        source: e.into(),
                    })?;
                Ok(f())
            });
            helper
                .join()
                .map_err(|_| NetnsError::Helper(self.id.clone()))?
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// What `/proc/self/fd/<fd>` links to, for error messages: `/dev/null` for a file,
/// `uts:[4026531838]` for another kind of namespace, `socket:[...]` for a socket.
fn describe(fd: BorrowedFd<'_>) -> std::io::Result<String> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(link.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_namespace_is_one() {
        let ns = Netns::current().unwrap();
        assert!(ns.id().starts_with("net:["), "{}", ns.id());
        // Inside it, a new descriptor of "our" namespace is the same one.
        let inside = ns
            .run(|| Netns::current().map(|n| n.id().to_string()))
            .unwrap();
        assert_eq!(inside.unwrap(), ns.id());
    }

    #[test]
    fn other_descriptors_are_refused() {
        let file: OwnedFd = File::open("/dev/null").unwrap().into();
        let err = Netns::from_fd(file).unwrap_err();
        assert!(
            matches!(err, NetnsError::NotNetns(ref s) if s == "/dev/null"),
            "{err}"
        );
        // Another kind of namespace is not a network namespace either.
        let err = Netns::open("/proc/self/ns/uts").unwrap_err();
        assert!(
            matches!(err, NetnsError::NotNetns(ref s) if s.starts_with("uts:[")),
            "{err}"
        );
        // A bind mount of a network namespace is one (what `ip netns add` makes).
        let name = format!("zds-test-{}", std::process::id());
        let added = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add (these tests need root and iproute2)");
        assert!(added.success());
        let bound = Netns::open(format!("/var/run/netns/{name}"));
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status();
        let bound = bound.unwrap();
        assert!(bound.id().starts_with("net:["));
        assert_ne!(bound.id(), Netns::current().unwrap().id());
        let err = Netns::open("/no/such/netns").unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
    }
}
