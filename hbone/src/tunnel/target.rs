//! The `:authority` of an HBONE CONNECT: `IP:port`, `[IPv6]:port` or `hostname:port`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    Host(String, u16),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("no :authority")]
    Missing,
    #[error("authority {0:?} has no port")]
    NoPort(String),
    #[error("authority {0:?} has a bad port")]
    BadPort(String),
    #[error("authority {0:?} has a bad host")]
    BadHost(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Target::Addr(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| TargetError::NoPort(s.to_string()))?;
        // Digits only: `u16::from_str` also takes a leading `+`, which would let
        // `10.0.0.1:+80` through as a hostname.
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TargetError::BadPort(s.to_string()));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| TargetError::BadPort(s.to_string()))?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid_host {
            return Err(TargetError::BadHost(s.to_string()));
        }
        Ok(Target::Host(host.to_string(), port))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_authorities() {
        assert_eq!(
            "10.0.0.1:8080".parse::<Target>().unwrap(),
            Target::Addr("10.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            "[fd00::1]:80".parse::<Target>().unwrap(),
            Target::Addr("[fd00::1]:80".parse().unwrap())
        );
        assert_eq!(
            "cart.shop.svc.cluster.local:80".parse::<Target>().unwrap(),
            Target::Host("cart.shop.svc.cluster.local".into(), 80)
        );
        assert_eq!(
            "[fd00::1]:80".parse::<Target>().unwrap().to_string(),
            "[fd00::1]:80"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "10.0.0.1",
            "host",
            "host:",
            "host:99999",
            ":80",
            "a b:80",
            "10.0.0.1:x",
            "fd00::1",
            "10.0.0.1:+8080",
            "host:+80",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad} accepted");
        }
    }
}
