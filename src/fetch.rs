//! Fetching an image from a client-supplied URL without letting the client reach our own network (SSRF).
//!
//! The client chooses the URL, so every hop is treated as hostile:
//!
//! - only `http` and `https`, no `user:password@`, a host is required;
//! - the host is resolved by [`GuardedResolver`], which refuses the whole host when *any* of its
//!   addresses is forbidden, and hands exactly the checked addresses to the connector, so a DNS
//!   answer that changes between the check and the connect (rebinding) cannot slip through;
//!   IP literals never reach a resolver, so they are checked before each request is sent;
//! - redirects are followed here, not by reqwest, and every hop goes through the same checks;
//! - `Content-Length` above the limit is refused before the body is read, and the body is
//!   streamed and abandoned as soon as it passes the limit;
//! - one timeout covers every hop: resolve, connect, headers and body;
//! - proxies from the environment are ignored (a proxy would do the resolving, out of our sight).
//!
//! `allow_private` (`--allow-private-image-urls`) lets private, loopback and other internal
//! ranges through, for tests and intranet image hosts. Link-local addresses and the cloud
//! metadata endpoints stay refused even then ([`is_always_forbidden_ip`]): no image is served
//! there, and instance credentials are.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, LOCATION};
use reqwest::{StatusCode, Url};

/// What a URL fetch may do. Built once from the server config.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Largest body accepted. A larger `Content-Length` is refused before reading; a body without
    /// one is refused as soon as it passes this.
    pub max_bytes: u64,
    /// The whole fetch: every hop's resolve, connect, headers and body.
    pub timeout: Duration,
    /// Redirects followed; each hop is checked like the first URL.
    pub max_redirects: usize,
    /// Let private, loopback, CGNAT and other internal addresses through
    /// (`--allow-private-image-urls`). Link-local and cloud metadata addresses stay refused.
    pub allow_private: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            max_redirects: 3,
            allow_private: false,
        }
    }
}

/// Why an image URL could not be fetched.
///
/// Messages name at most the host: never the path or query (signed URLs carry secrets there),
/// never user information, never a resolved internal address, never body bytes.
///
/// Suggested HTTP mapping (all `invalid_request_error`, since the client chose the URL):
///
/// | variant | status |
/// | --- | --- |
/// | `InvalidUrl` | 400 |
/// | `ForbiddenAddress` | 422 |
/// | `TooLarge` | 413 |
/// | `TooManyRedirects` | 422 |
/// | `Timeout` | 504 |
/// | `Upstream` | 502 |
/// | `Unreachable` | 502 |
#[derive(Debug, thiserror::Error)]
pub enum ImageUrlError {
    /// Unparsable, not http/https, user information in the URL, or no host.
    #[error("invalid image URL: {0}")]
    InvalidUrl(String),
    /// The host is, or resolves to, an address that may not be fetched. Holds the host only.
    #[error(
        "image URL host {0} is, or resolves to, an address that may not be fetched \
         (private, loopback, link-local, metadata or reserved)"
    )]
    ForbiddenAddress(String),
    #[error("the image at the URL is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("fetching the image URL took too long")]
    Timeout,
    #[error("the image URL redirected more than {limit} times")]
    TooManyRedirects { limit: usize },
    /// The image host answered with a status other than 2xx (or a redirect without `Location`).
    #[error("the image host answered HTTP {status}")]
    Upstream { status: u16 },
    /// DNS failure, connection refused or reset, TLS failure.
    #[error("the image host could not be reached: {0}")]
    Unreachable(String),
}

impl ImageUrlError {
    /// Stable snake_case code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "image_url_invalid",
            Self::ForbiddenAddress(_) => "image_url_forbidden",
            Self::TooLarge { .. } => "image_url_too_large",
            Self::Timeout => "image_url_timeout",
            Self::TooManyRedirects { .. } => "image_url_too_many_redirects",
            Self::Upstream { .. } => "image_url_upstream_error",
            Self::Unreachable(_) => "image_url_unreachable",
        }
    }

    /// Whether the client's URL is at fault rather than this server. True for every variant:
    /// even `Upstream`, `Unreachable` and `Timeout` are about the host the client chose, so they
    /// are not server failures (not alerted on, not retried by us), although the suggested status
    /// for them is 502/504 (see the type's table).
    pub fn is_client_error(&self) -> bool {
        // Exhaustive on purpose: a new variant must decide.
        match self {
            Self::InvalidUrl(_)
            | Self::ForbiddenAddress(_)
            | Self::TooLarge { .. }
            | Self::Timeout
            | Self::TooManyRedirects { .. }
            | Self::Upstream { .. }
            | Self::Unreachable(_) => true,
        }
    }
}

/// URLs longer than this are refused outright; no image URL needs more.
const MAX_URL_LEN: usize = 8 * 1024;

/// Never preallocate more than this from a server's `Content-Length`: a host that announces a
/// large body and trickles it should not pin that memory up front.
const MAX_PREALLOCATION: usize = 1024 * 1024;

/// The formats the decoder is built with, so that content-negotiating CDNs do not pick AVIF.
const ACCEPT_IMAGES: &str =
    "image/jpeg,image/png,image/webp,image/gif,image/bmp,image/tiff,*/*;q=0.1";

/// A client that never follows redirects by itself and never uses proxies from the environment.
pub struct ImageFetcher {
    client: reqwest::Client,
    policy: FetchPolicy,
}

impl ImageFetcher {
    pub fn new(policy: FetchPolicy) -> Self {
        let resolver = Arc::new(GuardedResolver {
            allow_private: policy.allow_private,
        });
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(resolver.clone())
                .user_agent(concat!("altimage/", env!("CARGO_PKG_VERSION")))
        };
        // Building fails only when the system root store holds certificates but none is valid.
        // Raw uploads must keep working then: fall back to no roots, so https URLs fail per
        // request (Unreachable, TLS error) instead of the server refusing to start.
        let client = builder().build().unwrap_or_else(|error| {
            tracing::warn!(%error, "no usable TLS root certificates; https image URLs will fail");
            builder()
                .tls_built_in_native_certs(false)
                .build()
                .expect("an HTTP client without root certificates always builds")
        });
        Self { client, policy }
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Fetch the image at `url`, following redirects, within the policy's limits.
    pub async fn fetch(&self, url: &str) -> Result<Bytes, ImageUrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(ImageUrlError::InvalidUrl(format!(
                "longer than {MAX_URL_LEN} bytes"
            )));
        }
        // The parse error says what is wrong; the URL itself is not echoed (it may hold secrets).
        let url = Url::parse(url).map_err(|e| ImageUrlError::InvalidUrl(e.to_string()))?;
        tokio::time::timeout(self.policy.timeout, self.fetch_hops(url))
            .await
            .unwrap_or(Err(ImageUrlError::Timeout))
    }

    /// Checks a URL this server will call later (a job's `webhook_url`) as an image URL's
    /// first hop is checked: scheme, user information, host, and a literal address. Host names
    /// are checked again when each delivery resolves them.
    pub fn check_target(&self, url: &str) -> Result<(), ImageUrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(ImageUrlError::InvalidUrl(format!(
                "longer than {MAX_URL_LEN} bytes"
            )));
        }
        let url = Url::parse(url).map_err(|e| ImageUrlError::InvalidUrl(e.to_string()))?;
        self.check_url(&url).map(drop)
    }

    /// POSTs a JSON body to `url` through the same guarded client (every resolved address
    /// checked, no proxies), with `headers`, within `timeout`. Redirects are not followed: the
    /// receiver's status is the answer. Returns that status.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
        timeout: Duration,
    ) -> Result<u16, ImageUrlError> {
        let url = Url::parse(url).map_err(|e| ImageUrlError::InvalidUrl(e.to_string()))?;
        self.check_url(&url)?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let send = async {
            let response = request.send().await.map_err(request_error)?;
            Ok(response.status().as_u16())
        };
        tokio::time::timeout(timeout, send)
            .await
            .unwrap_or(Err(ImageUrlError::Timeout))
    }

    async fn fetch_hops(&self, mut url: Url) -> Result<Bytes, ImageUrlError> {
        let mut redirects = 0;
        loop {
            let host = self.check_url(&url)?;
            let response = self
                .client
                .get(url.clone())
                .header(ACCEPT, ACCEPT_IMAGES)
                .send()
                .await
                .map_err(request_error)?;
            let status = response.status();
            // Host and status only: the path and query may carry the client's secrets.
            tracing::debug!(%host, status = status.as_u16(), "image URL answered");

            if is_followed_redirect(status) {
                if redirects == self.policy.max_redirects {
                    return Err(ImageUrlError::TooManyRedirects {
                        limit: self.policy.max_redirects,
                    });
                }
                redirects += 1;
                let location = response
                    .headers()
                    .get(LOCATION)
                    .ok_or(ImageUrlError::Upstream {
                        status: status.as_u16(),
                    })?
                    .to_str()
                    .map_err(|_| {
                        ImageUrlError::InvalidUrl("redirect Location is not valid text".into())
                    })?;
                // Relative Locations are resolved against the URL that answered.
                url = url.join(location).map_err(|e| {
                    ImageUrlError::InvalidUrl(format!("redirect Location is not a valid URL: {e}"))
                })?;
                continue;
            }
            if !status.is_success() {
                return Err(ImageUrlError::Upstream {
                    status: status.as_u16(),
                });
            }
            return read_limited(response, self.policy.max_bytes).await;
        }
    }

    /// Check one hop's URL before anything is sent, and return its host for logs and errors.
    /// Host names are checked by the resolver when the connector asks for their addresses.
    fn check_url(&self, url: &Url) -> Result<String, ImageUrlError> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(ImageUrlError::InvalidUrl(format!(
                "scheme {scheme} is not allowed, only http and https"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ImageUrlError::InvalidUrl(
                "user information (user:password@) is not allowed".into(),
            ));
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(ImageUrlError::InvalidUrl("the URL has no host".into())),
        };
        // The URL parser has already turned decimal, octal and hex IPv4 forms into dotted
        // quads; IPv6 literals keep their brackets here. The connector parses the same text
        // and connects to the literal without asking a resolver, so this is its only check.
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            && is_refused(ip, self.policy.allow_private)
        {
            return Err(ImageUrlError::ForbiddenAddress(host.to_owned()));
        }
        Ok(host.to_owned())
    }
}

/// The redirects a browser follows with a `Location`; 300, 304 and 305 are not followed.
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// Read the body, refusing it as soon as it passes `max_bytes`: at most `max_bytes` are kept,
/// plus the one chunk in flight.
async fn read_limited(
    mut response: reqwest::Response,
    max_bytes: u64,
) -> Result<Bytes, ImageUrlError> {
    let too_large = ImageUrlError::TooLarge { limit: max_bytes };
    let announced = response.content_length();
    if announced.is_some_and(|len| len > max_bytes) {
        return Err(too_large);
    }
    let capacity = announced.map_or(0, |len| {
        usize::try_from(len).map_or(MAX_PREALLOCATION, |len| len.min(MAX_PREALLOCATION))
    });
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if (body.len() + chunk.len()) as u64 > max_bytes {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Map a reqwest error without its URL, which may carry the client's secrets.
fn request_error(error: reqwest::Error) -> ImageUrlError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RefusedHost>() {
            return ImageUrlError::ForbiddenAddress(refused.host.clone());
        }
        source = e.source();
    }
    if error.is_timeout() {
        return ImageUrlError::Timeout;
    }
    ImageUrlError::Unreachable(describe(&error.without_url()))
}

/// "error sending request: client error (Connect): tcp connect error: Connection refused".
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let message = e.to_string();
        // io::Error repeats its inner error as its source; say it once.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = e.source();
    }
    text
}

/// Resolves host names for the fetcher's client and refuses a host with any forbidden address.
/// The connector connects only to the addresses returned here, so what is checked is what is
/// connected to.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // Refuse the host if any address is forbidden, not just drop that address: a host
            // that mixes public and internal addresses is not an image host we want to reach.
            if addrs
                .iter()
                .any(|addr| is_refused(addr.ip(), allow_private))
            {
                return Err(Box::new(RefusedHost { host }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The resolver's refusal; found again in the reqwest error's source chain.
#[derive(Debug)]
struct RefusedHost {
    host: String,
}

impl fmt::Display for RefusedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {} resolves to a forbidden address", self.host)
    }
}

impl StdError for RefusedHost {}

fn is_refused(ip: IpAddr, allow_private: bool) -> bool {
    if allow_private {
        is_always_forbidden_ip(ip)
    } else {
        is_forbidden_ip(ip)
    }
}

/// Whether an image may not be fetched from `ip` by default: anything that is not a public
/// unicast address, including IPv6 forms that reach a forbidden IPv4 address.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    is_always_forbidden_ip(ip)
        || match ip {
            IpAddr::V4(v4) => is_forbidden_ipv4(v4),
            IpAddr::V6(v6) => is_forbidden_ipv6(v6),
        }
}

/// Addresses refused even with `allow_private`: link-local (where clouds put their metadata
/// services) and the known metadata endpoints outside it.
pub fn is_always_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_metadata_ipv4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => is_metadata_ipv4(v4),
            None => {
                in_v6(v6, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)
                    // AWS instance metadata over IPv6 (Nitro).
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                    // Google Cloud.
                    || v6 == Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

fn is_metadata_ipv4(ip: Ipv4Addr) -> bool {
    in_v4(ip, Ipv4Addr::new(169, 254, 0, 0), 16) // link-local: AWS, GCP, Azure, OCI metadata
        || ip == Ipv4Addr::new(100, 100, 100, 200) // Alibaba Cloud metadata
        || ip == Ipv4Addr::new(168, 63, 129, 16) // Azure WireServer
}

/// IPv4 ranges that are not public unicast (IANA special-purpose registry).
const FORBIDDEN_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8), // "this network"; 0.0.0.0 reaches localhost
    (Ipv4Addr::new(10, 0, 0, 0), 8), // private
    (Ipv4Addr::new(100, 64, 0, 0), 10), // carrier-grade NAT
    (Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12), // private
    (Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24), // documentation
    (Ipv4Addr::new(192, 88, 99, 0), 24), // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16), // private
    (Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24), // documentation
    (Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, and 255.255.255.255 broadcast
];

/// Ranges inside global unicast 2000::/3 that are not public unicast.
const FORBIDDEN_V6_IN_GLOBAL: &[(Ipv6Addr, u8)] = &[
    // IETF protocol assignments: Teredo 2001::/32 (tunnels to an embedded IPv4), benchmarking,
    // ORCHID; none serves images.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation (RFC 9637)
];

fn is_forbidden_ipv4(ip: Ipv4Addr) -> bool {
    FORBIDDEN_V4.iter().any(|&(net, len)| in_v4(ip, net, len))
}

fn is_forbidden_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_ipv4(ip) {
        return is_forbidden_ipv4(v4);
    }
    // Public unicast is allocated only from 2000::/3. Outside it lie ::, ::1, the deprecated
    // IPv4-compatible ::a.b.c.d, 64:ff9b:1::/48 local NAT64, 100::/64 discard, 5f00::/16 SRv6,
    // fc00::/7 unique local (incl. fd00:ec2::254), fe80::/10 link-local, fec0::/10 site-local,
    // ff00::/8 multicast: all refused without listing them.
    if !in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return true;
    }
    FORBIDDEN_V6_IN_GLOBAL
        .iter()
        .any(|&(net, len)| in_v6(ip, net, len))
}

/// The IPv4 address an IPv6 address reaches when a host stack or gateway translates it.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let prefixes = [
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped ::ffff:a.b.c.d
        (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96), // IPv4-translated ::ffff:0:a.b.c.d
        (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64 well-known prefix
    ];
    if prefixes.iter().any(|&(net, len)| in_v6(ip, net, len)) {
        return Some(last32);
    }
    // 6to4: 2002:AABB:CCDD::/48 tunnels to AA.BB.CC.DD.
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix_len: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}
