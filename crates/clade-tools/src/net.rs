//! Egress guard: which addresses a tool may reach, and an HTTP client that dials only those.
//!
//! Names are resolved once; every resolved address is classified, and the request is pinned to
//! the checked address so no second lookup can rebind it. Redirects are followed by hand, each
//! hop checked again. Loopback, private, link-local, shared, multicast, unspecified and cloud
//! metadata addresses (and IPv6 forms embedding them) are refused unless granted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why an address is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Metadata,
    SharedCgnat,
    Unspecified,
    Multicast,
    Reserved,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::SharedCgnat => "shared (carrier-grade NAT)",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast or broadcast",
            AddressClass::Reserved => "reserved",
        }
    }
}

/// Names of metadata services, refused whatever they resolve to.
const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata", "instance-data"];

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, d] = ip.octets();
    match (a, b, c, d) {
        (169, 254, 169, 254) | (100, 100, 100, 200) | (168, 63, 129, 16) => AddressClass::Metadata,
        (0, 0, 0, 0) => AddressClass::Unspecified,
        (0, ..) => AddressClass::Reserved,
        (127, ..) => AddressClass::Loopback,
        (10, ..) | (192, 168, ..) => AddressClass::Private,
        (172, b, ..) if (16..32).contains(&b) => AddressClass::Private,
        (169, 254, ..) => AddressClass::LinkLocal,
        (100, b, ..) if (64..128).contains(&b) => AddressClass::SharedCgnat,
        (192, 0, 0, _) | (198, 18..=19, ..) => AddressClass::Reserved,
        (224..=255, ..) => AddressClass::Multicast,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    // fd00:ec2::254, AWS's IPv6 metadata address.
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254] {
        return AddressClass::Metadata;
    }
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s[0] {
        // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) carry an IPv4 address at the end.
        0x0064 if s[1] == 0xff9b => classify_v4(embedded(s[6], s[7])),
        0 if s[1..6] == [0, 0, 0, 0, 0] => classify_v4(embedded(s[6], s[7])),
        // 6to4 (2002::/16) carries it in segments 1 and 2.
        0x2002 => match classify_v4(embedded(s[1], s[2])) {
            AddressClass::Public => AddressClass::Public,
            other => other,
        },
        x if x & 0xfe00 == 0xfc00 => AddressClass::Private,
        x if x & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        x if x & 0xff00 == 0xff00 => AddressClass::Multicast,
        0x2001 if s[1] == 0x0db8 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("invalid URL {0:?}: {1}")]
    Url(String, String),
    #[error("scheme {0:?} is not allowed; use http or https")]
    Scheme(String),
    #[error(
        "{host} resolves to {address}, a {class} address; such destinations need a grant with `private_network`"
    )]
    Refused { host: String, address: IpAddr, class: &'static str },
    #[error("{0} is a cloud metadata service name; it is never reachable from tools")]
    MetadataName(String),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
}

/// What a refusal calls one of this host's own addresses ("a local interface address").
const LOCAL_INTERFACE: &str = "local interface";

/// Whether `ip`, or the IPv4 address it carries, is an address of one of this host's
/// interfaces: only then can a socket be bound to it.
fn is_this_host(ip: IpAddr) -> bool {
    let carried = match ip {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            v6.to_ipv4_mapped().or(match s[0] {
                0x0064 if s[1] == 0xff9b => Some(embedded(s[6], s[7])),
                0 if s[1..6] == [0, 0, 0, 0, 0] => Some(embedded(s[6], s[7])),
                0x2002 => Some(embedded(s[1], s[2])),
                _ => None,
            })
        }
    };
    let bindable = |ip: IpAddr| {
        !ip.is_unspecified() && std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
    };
    bindable(ip) || carried.is_some_and(|v4| bindable(IpAddr::V4(v4)))
}

/// Resolves `host` once and returns the address to dial, refusing non-public ones unless
/// `allow_private`. Every resolved address must pass, so a name with one private answer among
/// public ones (a rebinding setup) is refused.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<SocketAddr, EgressError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    if METADATA_NAMES.iter().any(|m| bare.eq_ignore_ascii_case(m)) {
        return Err(EgressError::MetadataName(bare.to_owned()));
    }
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| EgressError::Resolve(bare.to_owned(), e.to_string()))?
            .collect(),
    };
    let first = *addrs
        .first()
        .ok_or_else(|| EgressError::Resolve(bare.to_owned(), "no addresses".into()))?;
    for addr in &addrs {
        let class = classify(addr.ip());
        // The host's own addresses reach what listens on every interface (the gateway, a
        // database on 0.0.0.0) however public they look; checked now, at connect time.
        // (Loopback, metadata and unspecified addresses keep their own names.)
        let named = matches!(
            class,
            AddressClass::Loopback | AddressClass::Metadata | AddressClass::Unspecified
        );
        if !allow_private && !named && is_this_host(addr.ip()) {
            return Err(EgressError::Refused {
                host: bare.to_owned(),
                address: addr.ip(),
                class: LOCAL_INTERFACE,
            });
        }
        let never = class == AddressClass::Metadata;
        if class != AddressClass::Public && (never || !allow_private) {
            return Err(EgressError::Refused {
                host: bare.to_owned(),
                address: addr.ip(),
                class: class.as_str(),
            });
        }
    }
    Ok(first)
}

/// One request as a tool asks for it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub max_bytes: usize,
    pub timeout: Duration,
    pub allow_private: bool,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub url: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub truncated: bool,
}

impl Response {
    /// The status, content type and body as a tool gives them to the model.
    pub fn for_the_model(&self) -> String {
        let mut text = format!("status {}\n", self.status);
        if let Some(kind) = &self.content_type {
            text.push_str(&format!("content-type: {kind}\n"));
        }
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&self.body));
        if self.truncated {
            text.push_str(&format!("\n[truncated at {}]", bytes_text(self.body.len())));
        }
        text
    }
}

fn bytes_text(n: usize) -> String {
    if n.is_multiple_of(1024 * 1024) && n > 0 {
        format!("{} MiB", n / (1024 * 1024))
    } else {
        format!("{n} bytes")
    }
}

const MAX_REDIRECTS: usize = 5;

/// Why a request was not sent, or its answer not read.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("invalid HTTP method {0:?}")]
    Method(String),
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("request to {host} failed: {source}")]
    Request { host: String, source: reqwest::Error },
    #[error("redirect with an invalid Location header")]
    Location,
    #[error("invalid redirect {location:?}: {source}")]
    Redirect { location: String, source: url::ParseError },
    #[error(
        "{host} redirected ({status}) to another host, {to}; not followed: request that URL in a new call"
    )]
    OtherHost { host: String, status: u16, to: String },
    #[error("reading the response failed: {0}")]
    Read(#[source] reqwest::Error),
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
}

/// Sends `request`, following up to five redirects on the same host, every hop checked and
/// pinned.
pub async fn send(request: Request) -> Result<Response, SendError> {
    let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| SendError::Method(request.method.clone()))?;
    let mut url = request.url.clone();
    let mut method = method;
    let mut body = request.body.clone();
    #[allow(clippy::disallowed_methods)] // The request's I/O deadline, not domain time.
    let started = tokio::time::Instant::now();
    for _ in 0..=MAX_REDIRECTS {
        let parsed =
            url::Url::parse(&url).map_err(|e| EgressError::Url(url.clone(), e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EgressError::Scheme(parsed.scheme().to_owned()).into());
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| EgressError::Url(url.clone(), "no host".into()))?
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addr = resolve_checked(&host, port, request.allow_private).await?;
        let remaining = request.timeout.saturating_sub(started.elapsed());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve(host.trim_start_matches('[').trim_end_matches(']'), addr)
            .timeout(remaining)
            .build()
            .map_err(SendError::Client)?;
        let mut builder = client.request(method.clone(), parsed.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(text) = &body {
            builder = builder.body(text.clone());
        }
        let mut response = builder
            .send()
            .await
            .map_err(|source| SendError::Request { host: host.clone(), source })?;
        let status = response.status();
        if let Some(location) =
            response.headers().get(reqwest::header::LOCATION).filter(|_| status.is_redirection())
        {
            let location = location.to_str().map_err(|_| SendError::Location)?;
            let next = parsed
                .join(location)
                .map_err(|source| SendError::Redirect { location: location.to_owned(), source })?;
            // The policy allowed this host, not the one a redirect names: another host needs
            // a call of its own, which the policy decides again.
            if next.host_str() != parsed.host_str() {
                return Err(SendError::OtherHost {
                    host,
                    status: status.as_u16(),
                    to: next.host_str().unwrap_or("?").to_owned(),
                });
            }
            url = next.to_string();
            if status == reqwest::StatusCode::SEE_OTHER {
                method = reqwest::Method::GET;
                body = None;
            }
            continue;
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut data = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(SendError::Read)? {
            let room = request.max_bytes.saturating_sub(data.len());
            data.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                truncated = true;
                break;
            }
        }
        return Ok(Response { status: status.as_u16(), url, content_type, body: data, truncated });
    }
    Err(SendError::Redirects)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's address on its first interface that is not loopback: the source address
    /// of a route out (a UDP "connect" sends nothing).
    fn an_interface_address() -> IpAddr {
        for out in ["192.0.2.1:9", "10.0.0.1:9", "172.16.0.1:9", "198.51.100.1:9", "8.8.8.8:9"] {
            let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") else { continue };
            if socket.connect(out).is_ok()
                && let Ok(local) = socket.local_addr()
                && !local.ip().is_loopback()
                && !local.ip().is_unspecified()
            {
                return local.ip();
            }
        }
        panic!("this machine has no route out of loopback, so no interface address to test");
    }

    /// Every spelling of the host's own interface address is refused, whatever class it has,
    /// unless the grant allows private networks; someone else's address is not taken for it.
    #[tokio::test]
    async fn the_hosts_own_addresses_are_refused() {
        let IpAddr::V4(own) = an_interface_address() else { panic!("expected IPv4") };
        let [a, b, c, d] = own.octets();
        let spellings = [
            own.to_string(),
            format!("[::ffff:{own}]"),
            format!("[64:ff9b::{:x}{:02x}:{:x}{:02x}]", a, b, c, d),
            format!("[2002:{:x}{:02x}:{:x}{:02x}::1]", a, b, c, d),
        ];
        for host in spellings {
            match resolve_checked(&host, 80, false).await {
                Err(EgressError::Refused { class, .. }) => {
                    assert_eq!(class, LOCAL_INTERFACE, "{host}")
                }
                other => panic!("{host} was not refused as this host's: {other:?}"),
            }
        }
        assert!(resolve_checked(&own.to_string(), 80, true).await.is_ok());
        assert!(!is_this_host("198.51.100.77".parse().unwrap()), "TEST-NET-2 is no one's here");
    }

    #[test]
    fn classes() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("8.8.8.8"), AddressClass::Public);
        assert_eq!(c("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("127.1.2.3"), AddressClass::Loopback);
        assert_eq!(c("10.1.1.1"), AddressClass::Private);
        assert_eq!(c("172.31.0.1"), AddressClass::Private);
        assert_eq!(c("172.32.0.1"), AddressClass::Public);
        assert_eq!(c("192.168.0.1"), AddressClass::Private);
        assert_eq!(c("169.254.169.254"), AddressClass::Metadata);
        assert_eq!(c("169.254.1.1"), AddressClass::LinkLocal);
        assert_eq!(c("100.100.100.200"), AddressClass::Metadata);
        assert_eq!(c("100.64.0.1"), AddressClass::SharedCgnat);
        assert_eq!(c("0.0.0.0"), AddressClass::Unspecified);
        assert_eq!(c("::1"), AddressClass::Loopback);
        assert_eq!(c("::"), AddressClass::Unspecified);
        assert_eq!(c("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("::ffff:10.0.0.1"), AddressClass::Private);
        assert_eq!(c("64:ff9b::7f00:1"), AddressClass::Loopback);
        assert_eq!(c("2002:7f00:1::"), AddressClass::Loopback);
        assert_eq!(c("2002:a9fe:a9fe::"), AddressClass::Metadata);
        assert_eq!(c("fd00:ec2::254"), AddressClass::Metadata);
        assert_eq!(c("fc00::1"), AddressClass::Private);
        assert_eq!(c("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(c("2606:4700::1111"), AddressClass::Public);
    }
}
