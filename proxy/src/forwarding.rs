//! The forwarding headers the app receives.
//!
//! Clients can write `X-Forwarded-For`, `Forwarded` and `X-Real-IP`
//! themselves, so none of what arrived is passed on. The app gets a clean
//! chain instead: the client Vigil derived, every hop between it and Vigil
//! (each one vouched for by a trusted set), and Vigil's own peer; plus the
//! client alone in `Vigil-Client-IP`.

use std::fmt::Write;
use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderValue;

use vigil_engine::{ClientIp, Node};

/// Header names replaced on the way to the app.
pub const REPLACED: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

/// Headers a client can send that apps and frameworks take as the client's
/// address, scheme, host or path from a proxy in front of them: removed
/// from every request, on every route. `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are then set by Vigil, truthfully.
pub const SPOOFABLE: [&str; 15] = [
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "client-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-original-url",
    "x-rewrite-url",
];

/// A verified path: a client and its peer, and the few trusted hops
/// between, in place.
pub type Path = smallvec::SmallVec<[IpAddr; 4]>;

/// The verified path from the client to Vigil: the client first, the peer
/// last. Entries left of the client came from the client and are dropped.
pub fn verified_path(client: &ClientIp) -> Path {
    let hops = client.chain.as_slice();
    // The walk went right to left and stopped at the client, so everything
    // right of the client's rightmost appearance was trusted.
    let from = hops
        .iter()
        .rposition(|h| h.node == Node::Ip(client.addr))
        .filter(|_| client.addr != client.peer);
    let mut path: Path = match from {
        Some(i) => hops[i..]
            .iter()
            .filter_map(|h| match h.node {
                Node::Ip(ip) => Some(ip),
                _ => None,
            })
            .collect(),
        None => Path::new(),
    };
    if path.first() != Some(&client.addr) {
        path.insert(0, client.addr);
    }
    if path.last() != Some(&client.peer) {
        path.push(client.peer);
    }
    path
}

/// `X-Forwarded-For` for the app.
pub fn x_forwarded_for(path: &[IpAddr]) -> String {
    let mut out = String::with_capacity(path.len() * 17);
    push_x_forwarded_for(&mut out, path);
    out
}

fn push_x_forwarded_for(out: &mut String, path: &[IpAddr]) {
    for (i, ip) in path.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_ip(out, *ip);
    }
}

/// The three forwarding header values for the app.
#[derive(Debug)]
pub struct Values {
    /// `X-Forwarded-For`: the verified path.
    pub x_forwarded_for: HeaderValue,
    /// `Forwarded` (RFC 7239): the same path, and the scheme.
    pub forwarded: HeaderValue,
    /// `Vigil-Client-IP`: the client alone.
    pub client_ip: HeaderValue,
}

/// The forwarding header values for `client`, who reached Vigil over
/// `proto`: written into one buffer, one allocation shared by the three
/// values (they were three strings and a vector per request).
pub fn values(client: &ClientIp, proto: &str) -> Values {
    let path = verified_path(client);
    let mut out = String::with_capacity(path.len() * 64 + 48);
    push_x_forwarded_for(&mut out, &path);
    let a = out.len();
    push_forwarded(&mut out, &path, proto);
    let b = out.len();
    push_ip(&mut out, client.addr);
    let all = Bytes::from(out);
    let value = |bytes: Bytes| {
        // Addresses, separators and a scheme: visible ASCII always.
        HeaderValue::from_maybe_shared(bytes).unwrap_or(HeaderValue::from_static(""))
    };
    Values {
        x_forwarded_for: value(all.slice(..a)),
        forwarded: value(all.slice(a..b)),
        client_ip: value(all.slice(b..)),
    }
}

/// `ip` as text, as `Display` writes it.
pub fn ip_text(ip: IpAddr) -> String {
    let mut out = String::with_capacity(15);
    push_ip(&mut out, ip);
    out
}

/// Appends `ip` as `Display` writes it. IPv4 by hand: `Display` (padding
/// support, a formatter per octet) cost about 1,250 instructions per
/// address under callgrind, on every request, three times.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Whether `name` (a lower-case header name, as `http::HeaderName` keeps
/// it) is in [`SPOOFABLE`]: one `match`, the same set.
pub fn is_spoofable(name: &str) -> bool {
    matches!(
        name,
        "true-client-ip"
            | "cf-connecting-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "fastly-client-ip"
            | "client-ip"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-server"
            | "x-forwarded-scheme"
            | "x-forwarded-prefix"
            | "x-forwarded-ssl"
            | "x-original-url"
            | "x-rewrite-url"
    )
}

/// What the app must not get of a client's request headers, beyond the
/// fixed sets: the configuration's part, resolved once per generation.
#[derive(Debug, Clone, Copy)]
pub struct Strip<'a> {
    /// The peer is a trusted balancer: its `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` stand.
    pub from_trusted_peer: bool,
    /// Vigil writes the forwarding headers ([`REPLACED`] go).
    pub client_ip_to_app: bool,
    /// `[client_ip] strip_headers`.
    pub extra: &'a [http::HeaderName],
    /// A balancer's fingerprint headers (`upstream_ja4_header`, ...).
    pub fingerprints: [Option<&'a http::HeaderName>; 2],
}

impl Strip<'_> {
    /// Whether a request header named `name` goes before the request is
    /// sent to the app: a `Vigil-*` header (the app must be able to trust
    /// every one it sees), a spoofable one, one Vigil replaces, an
    /// underscore alias of any of those, or one the configuration names.
    pub fn strips(&self, name: &http::HeaderName) -> bool {
        let s = name.as_str();
        if s.starts_with(crate::config::VIGIL_HEADER_PREFIX) {
            return true;
        }
        if is_spoofable(s) {
            return !(self.from_trusted_peer
                && matches!(s, "x-forwarded-proto" | "x-forwarded-host"));
        }
        if self.client_ip_to_app && REPLACED.contains(&s) {
            return true;
        }
        is_underscore_alias(s)
            || self.extra.contains(name)
            || self.fingerprints.iter().flatten().any(|n| *n == name)
    }

    /// The names of `headers` that go, each once: one pass over the names
    /// present (a request carries a handful), instead of a removal per
    /// name that could be there.
    pub fn present(&self, headers: &http::HeaderMap) -> smallvec::SmallVec<[http::HeaderName; 4]> {
        headers.keys().filter(|n| self.strips(n)).cloned().collect()
    }
}

/// Whether a request header named `name` is one a CGI-style server would
/// read as a spoofable or Vigil header once `_` becomes `-` (WSGI, Rack and
/// PHP map both to the same `HTTP_*` variable): `X_Forwarded_Host`,
/// `Vigil_Client_Ip`.
pub fn is_underscore_alias(name: &str) -> bool {
    if !name.contains('_') {
        return false;
    }
    let dashed = name.replace('_', "-").to_ascii_lowercase();
    dashed.starts_with("vigil-")
        || SPOOFABLE.contains(&dashed.as_str())
        || REPLACED.contains(&dashed.as_str())
}

/// RFC 7239 `Forwarded` for the app; `proto` is the scheme the client used
/// to reach Vigil, on the last element.
pub fn forwarded(path: &[IpAddr], proto: &str) -> String {
    let mut out = String::with_capacity(path.len() * 22 + 12);
    push_forwarded(&mut out, path, proto);
    out
}

fn push_forwarded(out: &mut String, path: &[IpAddr], proto: &str) {
    for (i, ip) in path.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match ip {
            IpAddr::V4(_) => {
                out.push_str("for=");
                push_ip(out, *ip);
            }
            IpAddr::V6(v6) => {
                let _ = write!(out, "for=\"[{v6}]\"");
            }
        }
        if i + 1 == path.len() {
            out.push_str(";proto=");
            out.push_str(proto);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use vigil_engine::{
        ClientIpConfig, ClientIpStage, ForwardedHeaders, RequestView, TrustedProxies,
    };

    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "1.23.45.199",
            "127.0.0.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        // Every octet value in every position.
        for b in 0..=255u8 {
            ips.push(IpAddr::from([b, 255 - b, b / 3, b.wrapping_mul(7)]));
        }
        for ip in ips {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    fn resolve(peer: &str, xff: &str) -> ClientIp {
        let trusted = TrustedProxies::new(vec![
            ("lb".to_owned(), vec!["10.0.0.0/24".parse().unwrap()]),
            (
                "zscaler".to_owned(),
                vec!["185.46.212.0/22".parse().unwrap()],
            ),
        ])
        .unwrap();
        let stage = ClientIpStage::new(ClientIpConfig {
            trusted,
            ..ClientIpConfig::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", xff.parse().unwrap());
        let view = RequestView {
            peer: peer.parse().unwrap(),
            headers: &headers,
            now_secs: 0,
            tls: Default::default(),
            facts: Default::default(),
        };
        stage.resolve_with(&view, ForwardedHeaders::X_FORWARDED_FOR)
    }

    fn shown(path: &[IpAddr]) -> String {
        x_forwarded_for(path)
    }

    #[test]
    fn forged_entries_left_of_the_client_are_dropped() {
        let c = resolve("10.0.0.2", "6.6.6.6, 198.51.100.7, 185.46.212.10");
        assert_eq!(
            shown(&verified_path(&c)),
            "198.51.100.7, 185.46.212.10, 10.0.0.2"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_whole_path() {
        let c = resolve("203.0.113.9", "1.2.3.4, 5.6.7.8");
        assert_eq!(shown(&verified_path(&c)), "203.0.113.9");
    }

    #[test]
    fn the_spoofable_match_is_the_spoofable_list() {
        for name in SPOOFABLE {
            assert!(is_spoofable(name), "{name}");
        }
        for name in [
            "x-forwarded-for",
            "forwarded",
            "cookie",
            "x-forwarded",
            "client-ipx",
            "",
        ] {
            assert!(!is_spoofable(name), "{name}");
        }
    }

    #[test]
    fn one_pass_finds_every_header_that_goes_and_only_those() {
        let extra = [http::HeaderName::from_static("x-auth-user")];
        let ja4 = http::HeaderName::from_static("x-lb-ja4");
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "a.test"),
            ("cookie", "s=1"),
            ("user-agent", "ua"),
            ("vigil-risk-level", "low"),
            ("Vigil-Client-IP", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("true-client-ip", "1.1.1.1"),
            ("x_forwarded_host", "evil.test"),
            ("vigil_risk_level", "low"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("X-Auth-User", "admin"),
            ("x-lb-ja4", "t13d"),
            ("accept-language", "en"),
            ("x_custom", "kept"),
        ] {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        // A duplicate is one name, removed once.
        headers.append("true-client-ip", "2.2.2.2".parse().unwrap());
        let strip = Strip {
            from_trusted_peer: false,
            client_ip_to_app: true,
            extra: &extra,
            fingerprints: [Some(&ja4), None],
        };
        let names = |s: &Strip| {
            let mut v: Vec<String> = s.present(&headers).iter().map(|n| n.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&strip),
            [
                "true-client-ip",
                "vigil-client-ip",
                "vigil-risk-level",
                "vigil_risk_level",
                "x-auth-user",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-lb-ja4",
                "x-real-ip",
                "x_forwarded_host",
            ]
        );
        // Behind a trusted balancer its scheme and host stand; without the
        // forwarding headers to the app, the client's chain is left as is.
        let trusted = Strip {
            from_trusted_peer: true,
            client_ip_to_app: false,
            ..strip
        };
        assert_eq!(
            names(&trusted),
            [
                "true-client-ip",
                "vigil-client-ip",
                "vigil-risk-level",
                "vigil_risk_level",
                "x-auth-user",
                "x-lb-ja4",
                "x_forwarded_host",
            ]
        );
    }

    #[test]
    fn the_shared_values_are_the_separate_ones() {
        for (peer, xff) in [
            ("10.0.0.2", "6.6.6.6, 198.51.100.7, 185.46.212.10"),
            ("203.0.113.9", "1.2.3.4"),
            ("10.0.0.2", "2001:db8::1"),
        ] {
            let c = resolve(peer, xff);
            let path = verified_path(&c);
            let v = values(&c, "https");
            assert_eq!(v.x_forwarded_for, x_forwarded_for(&path).as_str());
            assert_eq!(v.forwarded, forwarded(&path, "https").as_str());
            assert_eq!(v.client_ip, ip_text(c.addr).as_str());
        }
    }

    #[test]
    fn forwarded_quotes_ipv6_and_names_the_scheme() {
        let path: Vec<IpAddr> = vec!["2001:db8::1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(
            forwarded(&path, "https"),
            "for=\"[2001:db8::1]\", for=10.0.0.2;proto=https"
        );
    }
}
