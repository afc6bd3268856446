//! The test application: small TCP servers and clients whose output the tests assert on,
//! plus a raw HBONE probe for talking to a ztunnel's 15008 directly.
//!
//! Data integrity uses a pseudo-random pattern with a prime period, so lost, duplicated or
//! reordered chunks all show up as a mismatch at a known offset.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Pattern period: a prime, so it never lines up with read or frame sizes.
const PERIOD: usize = 1_048_583;

fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    })
}

/// Checks `data` against the pattern starting at stream offset `offset`.
fn matches_pattern(offset: u64, data: &[u8]) -> Option<usize> {
    let p = pattern();
    let mut pos = (offset % PERIOD as u64) as usize;
    let mut i = 0;
    while i < data.len() {
        let n = (PERIOD - pos).min(data.len() - i);
        if data[i..i + n] != p[pos..pos + n] {
            let bad = (0..n).find(|k| data[i + k] != p[pos + k]).unwrap_or(0);
            return Some(i + bad);
        }
        i += n;
        pos = 0;
    }
    None
}

/// Echoes every connection until the client closes; then closes.
pub async fn echo(listen: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await?;
    println!("listening {listen}");
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Reads each connection to EOF, verifying the pattern, then answers `OK <bytes>` or
/// `MISMATCH <offset>`.
pub async fn pattern_server(listen: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await?;
    println!("listening {listen}");
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            let mut bad = None;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if bad.is_none()
                            && let Some(at) = matches_pattern(total, &buf[..n])
                        {
                            bad = Some(total + at as u64);
                        }
                        total += n as u64;
                    }
                    Err(_) => return,
                }
            }
            let answer = match bad {
                None => format!("OK {total}\n"),
                Some(at) => format!("MISMATCH {at}\n"),
            };
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

/// Sends `bytes` of the pattern (at most `rate` bytes/s if given), half-closes, and prints
/// the server's answer with the throughput.
pub async fn pattern_send(
    connect: SocketAddr,
    bytes: u64,
    rate: Option<u64>,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(connect).await.context("connect")?;
    let p = pattern();
    let start = Instant::now();
    let mut sent: u64 = 0;
    const CHUNK: usize = 128 * 1024;
    while sent < bytes {
        let pos = (sent % PERIOD as u64) as usize;
        let n = (PERIOD - pos).min(CHUNK).min((bytes - sent) as usize);
        s.write_all(&p[pos..pos + n]).await.context("write")?;
        sent += n as u64;
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    s.shutdown().await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.context("read answer")?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} secs={secs:.3} MBps={:.1}",
        answer.trim(),
        sent as f64 / secs / 1e6
    );
    Ok(())
}

/// Sends `message`, half-closes, prints everything received until EOF.
pub async fn roundtrip(connect: SocketAddr, message: &str) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(connect).await.context("connect")?;
    s.write_all(message.as_bytes()).await?;
    s.shutdown().await?;
    let mut got = String::new();
    s.read_to_string(&mut got).await.context("read")?;
    println!("received: {got}");
    Ok(())
}

/// Server that speaks first: writes `message`, half-closes, then reads the client to EOF and
/// prints what it got (tests the server-to-client FIN direction).
pub async fn greet(listen: SocketAddr, message: String) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await?;
    println!("listening {listen}");
    loop {
        let (mut s, _) = l.accept().await?;
        let message = message.clone();
        tokio::spawn(async move {
            if s.write_all(message.as_bytes()).await.is_err() || s.shutdown().await.is_err() {
                return;
            }
            let mut got = String::new();
            if s.read_to_string(&mut got).await.is_ok() {
                println!("received: {got}");
            }
        });
    }
}

/// Client for [`greet`]: reads to EOF first, then answers and half-closes.
pub async fn answer(connect: SocketAddr, message: &str) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(connect).await.context("connect")?;
    let mut got = String::new();
    s.read_to_string(&mut got).await.context("read")?;
    println!("received: {got}");
    s.write_all(message.as_bytes()).await?;
    s.shutdown().await?;
    // Wait for the server's close so our bytes are surely delivered.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    Ok(())
}

/// Opens `count` connections at once, exchanges one echo on each, prints `open <count>`,
/// holds them for `hold`, then closes them and prints `ok`.
pub async fn many(connect: SocketAddr, count: usize, hold: Duration) -> anyhow::Result<()> {
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(connect).await.context("connect")?;
            let msg = format!("ping {i}\n");
            s.write_all(msg.as_bytes()).await?;
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).await.context("echo")?;
            if buf != msg.as_bytes() {
                bail!("connection {i}: echo mismatch");
            }
            Ok::<_, anyhow::Error>(s)
        }));
    }
    let mut open = Vec::with_capacity(count);
    for t in tasks {
        open.push(t.await??);
    }
    println!("open {}", open.len());
    tokio::time::sleep(hold).await;
    drop(open);
    println!("ok");
    Ok(())
}

/// A small HTTP/1.1 server: each request (head, then `Content-Length` bytes of body) gets
/// 200 and `<METHOD> <path> from <peer IP>`; connections are kept alive.
pub async fn http_serve(listen: SocketAddr) -> anyhow::Result<()> {
    serve_http(listen, |head, _, peer| {
        let (method, path) = request_line(head);
        (200, "", format!("{method} {path} from {peer}"))
    })
    .await
}

/// An HTTP external authorizer (Istio's `envoyExtAuthzHttp`), deciding as Istio's sample
/// one does: a request carrying `x-ext-authz: allow` is allowed (200, and
/// `x-ext-authz-check-result: allowed` for the upstream), any other is denied with 403 and
/// a body naming the header it lacked.
pub async fn ext_authz_serve(listen: SocketAddr) -> anyhow::Result<()> {
    serve_http(listen, |head, _, _| {
        let allow = header(head, "x-ext-authz").is_some_and(|v| v == "allow");
        match allow {
            true => (200, "x-ext-authz-check-result: allowed\r\n", String::new()),
            false => (
                403,
                "x-ext-authz-check-result: denied\r\n",
                "denied by ext_authz: no x-ext-authz: allow".to_string(),
            ),
        }
    })
    .await
}

/// Serves the current content of `file` (read per request) with 200, whatever was asked:
/// a JWKS endpoint whose keys a test rotates by rewriting the file.
pub async fn file_serve(listen: SocketAddr, file: std::path::PathBuf) -> anyhow::Result<()> {
    serve_http(listen, move |_, _, _| {
        (200, "", std::fs::read_to_string(&file).unwrap_or_default())
    })
    .await
}

/// A collector: prints each request's line and body (one line each) and answers 202, as a
/// Zipkin collector answers `POST /api/v2/spans`.
pub async fn record(listen: SocketAddr) -> anyhow::Result<()> {
    serve_http(listen, |head, body, _| {
        let (method, path) = request_line(head);
        println!("{method} {path} {}", String::from_utf8_lossy(body));
        (202, "", String::new())
    })
    .await
}

/// `(method, path)` of a request head.
fn request_line(head: &str) -> (&str, &str) {
    let mut words = head.split_whitespace();
    (words.next().unwrap_or("?"), words.next().unwrap_or("?"))
}

/// The value of header `name` in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Serves HTTP/1.1 with keep-alive; `answer(head, body, peer IP)` gives each response's
/// status, extra header lines (each ending `\r\n`) and body.
async fn serve_http<F>(listen: SocketAddr, answer: F) -> anyhow::Result<()>
where
    F: Fn(&str, &[u8], std::net::IpAddr) -> (u16, &'static str, String) + Send + Sync + 'static,
{
    let listener = TcpListener::bind(listen).await.context("bind")?;
    println!("listening {listen}");
    let answer = Arc::new(answer);
    loop {
        let (mut s, peer) = listener.accept().await?;
        let answer = answer.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let Some(end) = read_head(&mut s, &mut buf).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = header(&head, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                buf.drain(..end + 4);
                while buf.len() < length {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let (status, extra, body) = answer(&head, &buf[..length], peer.ip());
                buf.drain(..length);
                let reason = match status {
                    200 => "OK",
                    202 => "Accepted",
                    _ => "Forbidden",
                };
                let resp = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n{extra}content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads until `buf` holds a request head; the index of its `\r\n\r\n`, or `None` at EOF.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i);
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A plain HTTP/1.1 request (with extra `headers`, each `Name: value`); prints the status
/// code, then the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user_agent: &str,
    headers: &[String],
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {user_agent}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    println!("{status}");
    print!("{body}");
    Ok(())
}

/// What a raw HBONE request should look like.
pub struct Probe {
    pub connect: SocketAddr,
    pub method: http::Method,
    pub authority: Option<String>,
    /// Client certificate (chain PEM, key PEM); none = present no certificate.
    pub cert: Option<(String, String)>,
}

/// Talks HBONE to `connect` directly; prints `status <code>` or `refused: <error>`.
pub async fn probe(p: Probe) -> anyhow::Result<()> {
    match probe_inner(p).await {
        Ok(status) => println!("status {}", status.as_u16()),
        Err(e) => println!("refused: {e:#}"),
    }
    Ok(())
}

async fn probe_inner(p: Probe) -> anyhow::Result<http::StatusCode> {
    let builder = rustls::ClientConfig::builder_with_provider(hbone::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = match &p.cert {
        Some((chain, key)) => {
            let cert = hbone::WorkloadCertificate::from_pem(chain, key)?;
            let ck = cert.certified_key()?;
            builder.with_client_auth_cert(
                ck.cert.clone(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pkcs8().to_vec().into()),
            )?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(p.connect).await.context("connect")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(hbone::server_name(p.connect.ip()), tcp)
        .await
        .context("TLS")?;
    let (send, conn) = h2::client::handshake(tls)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // CONNECT carries only the authority; other methods need a full URI to be well-formed
    // HTTP/2 at all, so that the server (not the HTTP/2 library) is what rejects them.
    let uri = match (&p.authority, p.method == http::Method::CONNECT) {
        (Some(a), true) => a.clone(),
        (Some(a), false) => format!("http://{a}/"),
        (None, _) => "/".into(),
    };
    let request = http::Request::builder()
        .method(p.method.clone())
        .uri(uri)
        .body(())?;
    let mut send = send.ready().await.context("HTTP/2 ready")?;
    let (response, mut stream) = send.send_request(request, false).context("send request")?;
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .context("no response")?
        .context("response")?;
    // Close our side cleanly so an accepted stream ends without an error.
    let _ = stream.send_data(bytes::Bytes::new(), true);
    Ok(response.status())
}

/// The probe checks nothing about the server: it is the server's checks under test.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &hbone::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &hbone::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        hbone::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_detects_damage() {
        let p = pattern();
        let data: Vec<u8> = p
            .iter()
            .chain(p.iter())
            .take(PERIOD + 100)
            .copied()
            .collect();
        assert_eq!(matches_pattern(0, &data), None);
        assert_eq!(matches_pattern(10, &data[10..]), None);
        let mut bad = data.clone();
        bad[PERIOD + 5] ^= 1;
        assert_eq!(matches_pattern(0, &bad), Some(PERIOD + 5));
        // A chunk delivered twice is caught.
        assert!(matches_pattern(0, &[&data[..1000], &data[500..1000]].concat()).is_some());
    }
}
