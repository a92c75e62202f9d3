use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

const LB_PEER: &str = "10.0.0.2";
const CLIENT: &str = "198.51.100.7";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// `lb` (the load balancer in front of Vigil), `cdn` and `zscaler`.
fn sets() -> TrustedProxies {
    TrustedProxies::new(vec![
        ("lb".to_owned(), nets(&["10.0.0.0/8", "fd00::/8"])),
        (
            "cdn".to_owned(),
            nets(&["203.0.113.0/24", "2001:db8:cd::/48"]),
        ),
        (
            "zscaler".to_owned(),
            nets(&["185.46.212.0/22", "2a03:eec0::/32", "10.99.0.0/16"]),
        ),
    ])
    .unwrap()
}

fn stage(strategy: ChainStrategy, headers: ForwardedHeaders) -> ClientIpStage {
    ClientIpStage::new(ClientIpConfig {
        headers,
        strategy,
        trusted: sets(),
        ..ClientIpConfig::default()
    })
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn resolve(stage: &ClientIpStage, peer: &str, headers: &[(&str, &str)]) -> ClientIp {
    let h = header_map(headers);
    stage.resolve(&RequestView {
        peer: ip(peer),
        headers: &h,
        now_secs: 0,
        tls: Default::default(),
        facts: Default::default(),
    })
}

/// Flags from a comma-separated list of their names.
fn flags(list: &str) -> ChainFlags {
    let mut f = ChainFlags::default();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "malformed" => f.malformed = true,
            "truncated" => f.truncated = true,
            "headers_ignored" => f.headers_ignored = true,
            "all_trusted" => f.all_trusted = true,
            "opaque_hop" => f.opaque_hop = true,
            "inconsistent" => f.inconsistent = true,
            other => panic!("no flag {other}"),
        }
    }
    f
}

struct Case {
    name: &'static str,
    strategy: ChainStrategy,
    honour: ForwardedHeaders,
    peer: &'static str,
    headers: &'static [(&'static str, &'static str)],
    client: &'static str,
    provider: Option<&'static str>,
    egress: Option<&'static str>,
    flags: &'static str,
}

const WALK: ChainStrategy = ChainStrategy::Walk;
const XFF: ForwardedHeaders = ForwardedHeaders::X_FORWARDED_FOR;
const FWD: ForwardedHeaders = ForwardedHeaders::FORWARDED;
const BOTH: ForwardedHeaders = ForwardedHeaders::BOTH;

fn run(cases: &[Case]) {
    for c in cases {
        let got = resolve(&stage(c.strategy, c.honour), c.peer, c.headers);
        assert_eq!(got.addr, ip(c.client), "{}: client of {got:#?}", c.name);
        assert_eq!(
            got.provider.map(|p| p.as_str().to_owned()),
            c.provider.map(str::to_owned),
            "{}: provider",
            c.name
        );
        assert_eq!(got.egress, c.egress.map(ip), "{}: egress", c.name);
        assert_eq!(got.flags, flags(c.flags), "{}: flags", c.name);
        assert!(
            got.chain.len() <= DEFAULT_MAX_HOPS,
            "{}: chain bounded",
            c.name
        );
    }
}

#[test]
fn spoofed_headers_from_untrusted_peers_are_ignored() {
    run(&[
        Case {
            name: "xff from an untrusted peer",
            strategy: WALK,
            honour: XFF,
            peer: "192.0.2.66",
            headers: &[("x-forwarded-for", "10.0.0.9, 203.0.113.10")],
            client: "192.0.2.66",
            provider: None,
            egress: None,
            flags: "headers_ignored",
        },
        Case {
            name: "forwarded from an untrusted peer",
            strategy: WALK,
            honour: BOTH,
            peer: "192.0.2.66",
            headers: &[("forwarded", "for=198.51.100.1")],
            client: "192.0.2.66",
            provider: None,
            egress: None,
            flags: "headers_ignored",
        },
        Case {
            name: "headers the listener does not honour are not even flagged",
            strategy: WALK,
            honour: FWD,
            peer: "192.0.2.66",
            headers: &[("x-forwarded-for", "198.51.100.1")],
            client: "192.0.2.66",
            provider: None,
            egress: None,
            flags: "",
        },
        Case {
            name: "hop count does not trust an untrusted peer either",
            strategy: ChainStrategy::Hops(1),
            honour: XFF,
            peer: "192.0.2.66",
            headers: &[("x-forwarded-for", "198.51.100.1")],
            client: "192.0.2.66",
            provider: None,
            egress: None,
            flags: "headers_ignored",
        },
        Case {
            name: "a forged leftmost entry is never the client",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "a forged trusted-looking entry left of the client is not used",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "10.0.0.9, 198.51.100.7, 203.0.113.10")],
            client: CLIENT,
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "",
        },
        Case {
            name: "a Forwarded quote left open by the client cannot swallow the proxy's entry",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=\"_x, for=198.51.100.7")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed",
        },
    ]);
}

#[test]
fn several_header_lines_form_one_list() {
    run(&[
        Case {
            name: "xff over two lines",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[
                ("x-forwarded-for", "6.6.6.6,198.51.100.7"),
                ("x-forwarded-for", " 203.0.113.10 "),
            ],
            client: CLIENT,
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "",
        },
        Case {
            name: "forwarded over two lines, case-insensitive names, extra pairs",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[
                ("forwarded", "For=198.51.100.7;proto=https"),
                (
                    "forwarded",
                    "FOR=\"203.0.113.10:443\";by=_lb; host=\"app.example\"",
                ),
            ],
            client: CLIENT,
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "",
        },
        Case {
            name: "empty list elements and empty lines are skipped",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[
                ("x-forwarded-for", "198.51.100.7,,"),
                ("x-forwarded-for", ""),
                ("x-forwarded-for", " , 203.0.113.10,"),
            ],
            client: CLIENT,
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "",
        },
    ]);
}

#[test]
fn mixed_forwarded_and_x_forwarded_for() {
    run(&[
        Case {
            name: "both agree: forwarded read, consistent",
            strategy: WALK,
            honour: BOTH,
            peer: LB_PEER,
            headers: &[
                ("forwarded", "for=198.51.100.7"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "both disagree: forwarded wins, flagged",
            strategy: WALK,
            honour: BOTH,
            peer: LB_PEER,
            headers: &[
                ("x-forwarded-for", "192.0.2.55"),
                ("forwarded", "for=198.51.100.7"),
            ],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "inconsistent",
        },
        Case {
            name: "both honoured, only xff present",
            strategy: WALK,
            honour: BOTH,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "only xff honoured: a client-sent forwarded is not read",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[
                ("forwarded", "for=6.6.6.6"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "only forwarded honoured, only xff present: the peer is the client",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "all_trusted",
        },
    ]);
}

#[test]
fn ipv6_brackets_ports_zones_and_mapped_addresses() {
    run(&[
        Case {
            name: "xff bracketed with port",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "[2001:db8::7]:443")],
            client: "2001:db8::7",
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "xff bare ipv6 and ipv4 with port",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "2001:db8::7, 203.0.113.10:5678")],
            client: "2001:db8::7",
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "",
        },
        Case {
            name: "xff zone id is dropped",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "fe80::1%eth0")],
            client: "fe80::1",
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "xff zone id in brackets is dropped",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "[fe80::1%en0]:8080")],
            client: "fe80::1",
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "xff empty zone id is malformed",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "fe80::1%")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "xff ipv4-mapped is ipv4",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[(
                "x-forwarded-for",
                "::ffff:198.51.100.7, [::ffff:203.0.113.10]:80",
            )],
            client: CLIENT,
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "",
        },
        Case {
            name: "a mapped peer is an ipv4 peer",
            strategy: WALK,
            honour: XFF,
            peer: "::ffff:10.0.0.2",
            headers: &[("x-forwarded-for", "198.51.100.7")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "forwarded bracketed ipv6 with port through an ipv6 cdn",
            strategy: WALK,
            honour: FWD,
            peer: "fd00::1",
            headers: &[(
                "forwarded",
                "for=\"[2001:db8::7]:4711\", for=\"[2001:db8:cd::9]\"",
            )],
            client: "2001:db8::7",
            provider: Some("cdn"),
            egress: Some("2001:db8:cd::9"),
            flags: "",
        },
        Case {
            name: "forwarded unbracketed ipv6 is malformed",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=2001:db8::7")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded quoted-pair escapes are read",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", r#"for="198.51.100\.7""#)],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
    ]);
}

#[test]
fn malformed_entries_stop_the_walk_where_they_are() {
    run(&[
        Case {
            name: "garbage nearest the peer: the peer is the client",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7, not-an-ip")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "garbage left of the client is only flagged",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "not-an-ip, 198.51.100.7")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed",
        },
        Case {
            name: "leading zeros, short forms and bad ports are malformed",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[(
                "x-forwarded-for",
                "010.0.0.1, 10.1, 1.2.3.4:99999, 1.2.3.4:, [1.2.3.4], 198.51.100.7",
            )],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed",
        },
        Case {
            name: "forwarded: unterminated quote",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=\"198.51.100.7")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded: for given twice",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=198.51.100.7;for=192.0.2.1")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded: bad syntax in another pair spoils the element",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=198.51.100.7;proto")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded: unquoted port is tolerated",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=198.51.100.7:8443")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
    ]);
}

#[test]
fn private_ranges_are_trusted_only_when_listed() {
    run(&[
        Case {
            name: "a private client address is a client",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "192.168.1.20")],
            client: "192.168.1.20",
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "an unlisted private hop stops the walk",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7, 172.16.0.9")],
            client: "172.16.0.9",
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "an unlisted private peer is not trusted",
            strategy: WALK,
            honour: XFF,
            peer: "192.168.0.1",
            headers: &[("x-forwarded-for", "198.51.100.7")],
            client: "192.168.0.1",
            provider: None,
            egress: None,
            flags: "headers_ignored",
        },
    ]);
}

#[test]
fn all_trusted_chains_take_the_leftmost_hop() {
    run(&[
        Case {
            name: "every hop trusted",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "185.46.212.9, 203.0.113.10")],
            client: "185.46.212.9",
            provider: Some("zscaler"),
            egress: Some("185.46.212.9"),
            flags: "all_trusted",
        },
        Case {
            name: "trusted peer without headers",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "all_trusted",
        },
        Case {
            name: "the most specific set names the hop",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7, 10.99.1.1")],
            client: CLIENT,
            provider: Some("zscaler"),
            egress: Some("10.99.1.1"),
            flags: "",
        },
    ]);
}

#[test]
fn unknown_and_obfuscated_nodes_stop_the_walk_safely() {
    run(&[
        Case {
            name: "obfuscated client behind a cdn",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=_hidden, for=203.0.113.10")],
            client: "203.0.113.10",
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "opaque_hop",
        },
        Case {
            name: "unknown nearest the peer",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=198.51.100.7, for=unknown")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "opaque_hop",
        },
        Case {
            name: "unknown in xff",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7, unknown")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "opaque_hop",
        },
        Case {
            name: "an element without for",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=198.51.100.7, by=10.0.0.2;proto=https")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "opaque_hop",
        },
        Case {
            name: "obfuscated ports are fine",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=\"198.51.100.7:_p1\"")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "an obfuscated node left of the client is irrelevant",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=_a, for=198.51.100.7")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
    ]);
}

#[test]
fn hop_count_strategy() {
    run(&[
        Case {
            name: "two proxies: skip one entry",
            strategy: ChainStrategy::Hops(2),
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.0.2.99")],
            client: CLIENT,
            provider: None,
            egress: Some("192.0.2.99"),
            flags: "",
        },
        Case {
            name: "one proxy: the rightmost entry, even a trusted-looking one",
            strategy: ChainStrategy::Hops(1),
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7, 203.0.113.10")],
            client: "203.0.113.10",
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
        Case {
            name: "chain shorter than the count",
            strategy: ChainStrategy::Hops(3),
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "203.0.113.10")],
            client: "203.0.113.10",
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "all_trusted",
        },
        Case {
            name: "opaque hop where the client should be",
            strategy: ChainStrategy::Hops(2),
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7, unknown, 203.0.113.10")],
            client: "203.0.113.10",
            provider: Some("cdn"),
            egress: Some("203.0.113.10"),
            flags: "opaque_hop",
        },
        Case {
            name: "an opaque intermediate hop is fine",
            strategy: ChainStrategy::Hops(3),
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=198.51.100.7, for=_cdn, for=203.0.113.10")],
            client: CLIENT,
            provider: None,
            egress: None,
            flags: "",
        },
        Case {
            name: "zero hops: no proxy, headers ignored",
            strategy: ChainStrategy::Hops(0),
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "198.51.100.7")],
            client: LB_PEER,
            provider: None,
            egress: None,
            flags: "headers_ignored",
        },
    ]);
}

#[test]
fn default_stage_is_the_peer() {
    let h = header_map(&[
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=198.51.100.7"),
    ]);
    let got = ClientIpStage::default().resolve(&RequestView {
        peer: ip("192.0.2.10"),
        headers: &h,
        now_secs: 0,
        tls: Default::default(),
        facts: Default::default(),
    });
    assert_eq!(got, ClientIp::from_peer(ip("192.0.2.10")));
}

#[test]
fn per_request_choice_overrides_the_configured_headers() {
    let s = stage(WALK, ForwardedHeaders::NONE);
    let h = header_map(&[("x-forwarded-for", CLIENT)]);
    let view = RequestView {
        peer: ip(LB_PEER),
        headers: &h,
        now_secs: 0,
        tls: Default::default(),
        facts: Default::default(),
    };
    assert_eq!(s.resolve(&view).addr, ip(LB_PEER));
    assert_eq!(s.resolve_with(&view, XFF).addr, ip(CLIENT));
}

#[test]
fn the_chain_is_kept_as_read() {
    let got = resolve(
        &stage(WALK, FWD),
        LB_PEER,
        &[
            ("forwarded", "for=_hidden;proto=https, for=unknown"),
            (
                "forwarded",
                "for=\"[2001:db8::7]:443\", for=nonsense, for=203.0.113.10:80",
            ),
        ],
    );
    let hop = |node, port| Hop { node, port };
    assert_eq!(
        got.chain.as_slice(),
        &[
            hop(Node::Obfuscated, None),
            hop(Node::Unknown, None),
            hop(Node::Ip(ip("2001:db8::7")), Some(443)),
            hop(Node::Malformed, None),
            hop(Node::Ip(ip("203.0.113.10")), Some(80)),
        ]
    );
    assert_eq!(got.source, Some(ChainSource::Forwarded));
    assert_eq!(got.peer, ip(LB_PEER));
    // The walk stops at the malformed entry next to the cdn hop.
    assert_eq!(got.addr, ip("203.0.113.10"));
    assert_eq!(got.flags, flags("malformed,opaque_hop"));
}

#[test]
fn caps_keep_the_right_end_of_the_chain() {
    let capped = |max_hops, max_header_bytes| {
        ClientIpStage::new(ClientIpConfig {
            headers: BOTH,
            trusted: sets(),
            max_hops,
            max_header_bytes,
            ..ClientIpConfig::default()
        })
    };
    // Hop cap: three of five entries read, the rightmost.
    let got = resolve(
        &capped(3, 8192),
        LB_PEER,
        &[(
            "x-forwarded-for",
            "192.0.2.1, 192.0.2.2, 198.51.100.7, 203.0.113.10, 203.0.113.11",
        )],
    );
    assert_eq!(got.chain.len(), 3);
    assert_eq!(got.addr, ip(CLIENT));
    assert_eq!(got.flags, flags("truncated"));
    // Exactly at the cap is not truncated.
    let got = resolve(
        &capped(3, 8192),
        LB_PEER,
        &[(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.10, 203.0.113.11",
        )],
    );
    assert_eq!(got.flags, flags(""));
    // Hop cap reached inside a trusted run: the leftmost read hop is the client.
    let got = resolve(
        &capped(2, 8192),
        LB_PEER,
        &[(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.10, 203.0.113.11",
        )],
    );
    assert_eq!(got.addr, ip("203.0.113.10"));
    assert_eq!(got.flags, flags("truncated,all_trusted"));

    // Byte cap: 10 KiB of padding on the client's end of one line.
    let padded = format!("{}, 198.51.100.7, 203.0.113.10", "1".repeat(10 * 1024));
    let h = header_map(&[("x-forwarded-for", padded.as_str())]);
    let got = capped(32, 8192).resolve(&RequestView {
        peer: ip(LB_PEER),
        headers: &h,
        now_secs: 0,
        tls: Default::default(),
        facts: Default::default(),
    });
    assert_eq!(got.addr, ip(CLIENT));
    assert_eq!(got.chain.len(), 2);
    assert_eq!(got.flags, flags("truncated"));

    // Byte cap across lines: the earlier line is not read at all.
    let pad = "2".repeat(100);
    let h = header_map(&[
        ("forwarded", pad.as_str()),
        ("forwarded", "for=198.51.100.7, for=203.0.113.10"),
    ]);
    let got = capped(32, 64).resolve(&RequestView {
        peer: ip(LB_PEER),
        headers: &h,
        now_secs: 0,
        tls: Default::default(),
        facts: Default::default(),
    });
    assert_eq!(got.addr, ip(CLIENT));
    assert_eq!(got.flags, flags("truncated"));

    // A line exactly at the byte cap is read whole.
    let line = "198.51.100.7";
    let got = resolve(
        &capped(32, line.len()),
        LB_PEER,
        &[("x-forwarded-for", line)],
    );
    assert_eq!(got.addr, ip(CLIENT));
    assert_eq!(got.flags, flags(""));
}

#[test]
fn trusted_sets_pick_the_most_specific_network() {
    let t = TrustedProxies::new(vec![
        ("wide".to_owned(), nets(&["10.0.0.0/8", "::/0"])),
        ("narrow".to_owned(), nets(&["10.1.0.0/16", "10.1.2.3/32"])),
        ("same".to_owned(), nets(&["10.1.0.0/16", "2001:db8::/32"])),
        ("mapped".to_owned(), nets(&["::ffff:192.0.2.0/120"])),
        ("host_bits".to_owned(), nets(&["198.51.100.77/24"])),
        ("all_v4".to_owned(), nets(&["0.0.0.0/0"])),
    ])
    .unwrap();
    let name = |a: &str| t.lookup(ip(a)).map(|p| p.as_str().to_owned());
    let cases = [
        ("10.0.0.1", "wide"),
        ("10.255.255.255", "wide"),
        ("10.1.0.0", "narrow"),
        ("10.1.2.3", "narrow"),
        ("10.1.255.255", "narrow"),
        ("10.2.0.0", "wide"),
        ("2001:db8::1", "same"),
        ("2001:db9::1", "wide"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "wide"),
        ("::", "wide"),
        ("192.0.2.200", "mapped"),
        ("::ffff:192.0.2.200", "mapped"),
        ("198.51.100.1", "host_bits"),
        ("255.255.255.255", "all_v4"),
        ("0.0.0.0", "all_v4"),
        ("9.255.255.255", "all_v4"),
    ];
    for (addr, want) in cases {
        assert_eq!(name(addr).as_deref(), Some(want), "{addr}");
    }
    assert!(TrustedProxies::default().lookup(ip("10.0.0.1")).is_none());
}

#[test]
fn trusted_set_errors_are_all_reported() {
    let err = TrustedProxies::new(vec![
        ("lb".to_owned(), vec![]),
        ("".to_owned(), vec![]),
        ("has space".to_owned(), vec![]),
        ("x".repeat(33), vec![]),
        ("lb".to_owned(), vec![]),
    ])
    .unwrap_err();
    assert_eq!(err.len(), 4, "{err:?}");
    assert!(matches!(
        err[3],
        TrustedSetError::DuplicateName { index: 4, .. }
    ));
    assert!(err[0].to_string().contains("trusted set 1"));
    assert!(Provider::new(&"x".repeat(32)).is_some());
}

// === properties ===

/// Linear reference: the most specific network holding `addr`, first set on
/// ties.
fn naive_lookup(sets: &[(String, Vec<IpNet>)], addr: IpAddr) -> Option<String> {
    let addr = addr.to_canonical();
    let mut best: Option<(u8, &str)> = None;
    for (name, nets) in sets {
        for net in nets {
            let net = match net {
                IpNet::V6(n) if n.prefix_len() >= 96 && n.network().to_ipv4_mapped().is_some() => {
                    ipnet::Ipv4Net::new(n.network().to_ipv4_mapped().unwrap(), n.prefix_len() - 96)
                        .unwrap()
                        .into()
                }
                n => *n,
            };
            if net.contains(&addr) && best.is_none_or(|(len, _)| net.prefix_len() > len) {
                best = Some((net.prefix_len(), name));
            }
        }
    }
    best.map(|(_, n)| n.to_owned())
}

fn small_v4_net() -> impl Strategy<Value = IpNet> {
    // A small space so that networks overlap and nest.
    (any::<u8>(), 16u8..=32).prop_map(|(b, len)| {
        IpNet::V4(ipnet::Ipv4Net::new([10, b >> 4, b & 0x0f, b].into(), len).unwrap())
    })
}

fn small_v6_net() -> impl Strategy<Value = IpNet> {
    (any::<u16>(), 0u8..=128).prop_map(|(x, len)| {
        let addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, x >> 8, x & 0xff, 0, 0, 0, x);
        IpNet::V6(ipnet::Ipv6Net::new(addr, len.clamp(24, 128)).unwrap())
    })
}

/// Addresses that are in the `sets()` of the walk tests, or not.
fn pool_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (1u8..=254).prop_map(|x| IpAddr::from([10, 0, 0, x])), // lb
        (1u8..=254).prop_map(|x| IpAddr::from([203, 0, 113, x])), // cdn
        (212u8..=215).prop_map(|x| IpAddr::from([185, 46, x, 9])), // zscaler
        (1u16..=9).prop_map(|x| IpAddr::from([0x2001, 0xdb8, 0xcd, 0, 0, 0, 0, x])), // cdn v6
        (1u8..=254).prop_map(|x| IpAddr::from([198, 51, 100, x])), // untrusted
        (1u8..=254).prop_map(|x| IpAddr::from([192, 168, 0, x])), // untrusted, private
        (1u16..=9).prop_map(|x| IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, x])), // untrusted v6
    ]
}

#[derive(Debug, Clone)]
enum Entry {
    Ip(IpAddr, Option<u16>, bool),
    Unknown,
    Obfuscated,
    Junk(usize),
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        6 => (pool_addr(), proptest::option::of(any::<u16>()), any::<bool>())
            .prop_map(|(a, p, mapped)| Entry::Ip(a, p, mapped)),
        1 => Just(Entry::Unknown),
        1 => Just(Entry::Obfuscated),
        1 => (0usize..4).prop_map(Entry::Junk),
    ]
}

fn xff_text(e: &Entry) -> String {
    match e {
        Entry::Ip(IpAddr::V4(a), port, mapped) => {
            let host = if *mapped {
                format!("::ffff:{a}")
            } else {
                a.to_string()
            };
            match (port, mapped) {
                (Some(p), false) => format!("{host}:{p}"),
                (Some(p), true) => format!("[{host}]:{p}"),
                (None, _) => host,
            }
        }
        Entry::Ip(IpAddr::V6(a), Some(p), _) => format!("[{a}]:{p}"),
        Entry::Ip(IpAddr::V6(a), None, _) => a.to_string(),
        Entry::Unknown => "unknown".to_owned(),
        Entry::Obfuscated => "_hidden".to_owned(), // not XFF syntax: malformed
        Entry::Junk(i) => ["1.2.3", "999.1.1.1", "[::1", "abc"][*i].to_owned(),
    }
}

fn forwarded_text(e: &Entry) -> String {
    match e {
        Entry::Ip(IpAddr::V4(a), Some(p), _) => format!("for=\"{a}:{p}\";proto=https"),
        Entry::Ip(IpAddr::V4(a), None, _) => format!("For={a}"),
        Entry::Ip(IpAddr::V6(a), Some(p), _) => format!("for=\"[{a}]:{p}\""),
        Entry::Ip(IpAddr::V6(a), None, _) => format!("by=_x;FOR=\"[{a}]\""),
        Entry::Unknown => "for=unknown".to_owned(),
        Entry::Obfuscated => "for=_hidden".to_owned(),
        Entry::Junk(i) => [
            "for=abc",
            "for=\"[::1\"",
            "for=1.2.3.4;for=1.2.3.4",
            "for=\"1.2.3.4:99999\"",
        ][*i]
            .to_owned(),
    }
}

/// The reference walk over the generated entries: nearest first from the
/// peer, stop at the first untrusted address or at anything that is not an
/// address.
fn reference_client(trusted: &TrustedProxies, peer: IpAddr, entries: &[Entry]) -> IpAddr {
    let is_trusted = |a: IpAddr| trusted.lookup(a).is_some();
    if !is_trusted(peer) {
        return peer;
    }
    let mut at = peer;
    for e in entries.iter().rev() {
        match e {
            Entry::Ip(a, _, _) => {
                let a = a.to_canonical();
                if !is_trusted(a) {
                    return a;
                }
                at = a;
            }
            Entry::Obfuscated | Entry::Unknown | Entry::Junk(_) => return at,
        }
    }
    at
}

proptest! {
    #[test]
    fn lookup_matches_a_linear_scan(
        v4 in proptest::collection::vec(proptest::collection::vec(small_v4_net(), 0..6), 1..5),
        v6 in proptest::collection::vec(small_v6_net(), 0..6),
        probes in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u16>()), 1..40),
    ) {
        let mut sets: Vec<(String, Vec<IpNet>)> = v4
            .into_iter()
            .enumerate()
            .map(|(i, n)| (format!("s{i}"), n))
            .collect();
        sets.push(("v6".to_owned(), v6));
        let t = TrustedProxies::new(sets.clone()).unwrap();
        for (a, b, x) in probes {
            let v4 = IpAddr::from([10, a >> 4, b, a]);
            let v6 = IpAddr::from([0x2001, 0xdb8, x >> 8, x & 0xff, 0, 0, 0, x]);
            for addr in [v4, v6] {
                prop_assert_eq!(
                    t.lookup(addr).map(|p| p.as_str().to_owned()),
                    naive_lookup(&sets, addr),
                    "{}", addr
                );
            }
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address(
        peer in pool_addr(),
        entries in proptest::collection::vec(entry(), 0..12),
        lines in 1usize..4,
        use_xff in any::<bool>(),
    ) {
        let trusted = sets();
        let s = stage(WALK, BOTH);
        let text: Vec<String> = entries
            .iter()
            .map(|e| if use_xff { xff_text(e) } else { forwarded_text(e) })
            .collect();
        // Spread the entries over `lines` header lines.
        let per = text.len().div_ceil(lines).max(1);
        let mut h = HeaderMap::new();
        let name = if use_xff { "x-forwarded-for" } else { "forwarded" };
        for chunk in text.chunks(per) {
            h.append(name, HeaderValue::from_str(&chunk.join(", ")).unwrap());
        }
        let got = s.resolve(&RequestView { peer, headers: &h, now_secs: 0, tls: Default::default(), facts: Default::default() });
        let want = reference_client(&trusted, peer, &entries);
        prop_assert_eq!(got.addr, want);
        let client_trusted = trusted.lookup(got.addr).is_some();
        if !got.flags.all_trusted && !got.flags.opaque_hop && trusted.lookup(peer).is_some() {
            prop_assert!(!client_trusted, "a trusted hop was taken as the client: {:?}", got);
        }
        if !got.flags.headers_ignored && trusted.lookup(peer).is_some() {
            // Every entry made it into the chain, in order.
            prop_assert_eq!(got.chain.len(), entries.len());
        }
    }

    #[test]
    fn parsers_never_panic_and_respect_the_caps(
        fwd in proptest::collection::vec(header_bytes(), 0..4),
        xff in proptest::collection::vec(header_bytes(), 0..4),
        max_hops in 0usize..12,
        max_header_bytes in 0usize..400,
        hops in 0u8..4,
        peer in pool_addr(),
    ) {
        let s = ClientIpStage::new(ClientIpConfig {
            headers: BOTH,
            strategy: if hops == 0 { WALK } else { ChainStrategy::Hops(hops) },
            trusted: sets(),
            max_hops,
            max_header_bytes,
        });
        let mut h = HeaderMap::new();
        for v in &fwd {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append("forwarded", v);
            }
        }
        for v in &xff {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append("x-forwarded-for", v);
            }
        }
        let got = s.resolve(&RequestView { peer, headers: &h, now_secs: 0, tls: Default::default(), facts: Default::default() });
        prop_assert!(got.chain.len() <= max_hops);
        // Reading within the byte cap means reading at most that many bytes.
        let total: usize = h.get_all("forwarded").iter().map(|v| v.len()).sum();
        if got.source == Some(ChainSource::Forwarded) && total > max_header_bytes {
            prop_assert!(got.flags.truncated);
        }
        // The client is the peer or an address of the chain.
        prop_assert!(
            got.addr == got.peer
                || got.chain.iter().any(|hop| hop.node == Node::Ip(got.addr))
        );
    }

    #[test]
    fn bytes_beyond_the_cap_change_nothing(
        line in header_bytes().prop_filter("two bytes or more", |l| l.len() >= 2),
        prefix in header_bytes(),
        cap_seed in any::<usize>(),
        use_xff in any::<bool>(),
    ) {
        // A cap shorter than the line.
        let cap = 1 + cap_seed % (line.len() - 1);
        let s = ClientIpStage::new(ClientIpConfig {
            headers: BOTH,
            trusted: sets(),
            max_header_bytes: cap,
            ..ClientIpConfig::default()
        });
        let name = if use_xff { "x-forwarded-for" } else { "forwarded" };
        let resolve_line = |bytes: &[u8]| {
            let mut h = HeaderMap::new();
            h.append(name, HeaderValue::from_bytes(bytes).unwrap());
            s.resolve(&RequestView { peer: ip(LB_PEER), headers: &h, now_secs: 0, tls: Default::default(), facts: Default::default() })
        };
        let mut longer = prefix.clone();
        longer.extend_from_slice(&line);
        let a = resolve_line(&line);
        prop_assert!(a.flags.truncated);
        prop_assert_eq!(a, resolve_line(&longer));
    }
}

/// Header-value bytes biased towards the syntax of both headers.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] =
        b"0123456789abcdefABCDEF.:[]%,; \t\"\\=_forFORunknwbyp10.0.0.2203.0.113.";
    prop_oneof![
        proptest::collection::vec(proptest::sample::select(ALPHABET), 0..160),
        proptest::collection::vec(0x20u8..=0x7e, 0..160),
        proptest::collection::vec(any::<u8>(), 0..160).prop_map(|mut v| {
            // Keep it a valid header value.
            v.retain(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f));
            v
        }),
    ]
}

#[test]
fn unspecified_addresses_and_loose_forwarded_syntax_are_malformed() {
    run(&[
        Case {
            name: "0.0.0.0 nearest the peer names no host: the peer is the client",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "0.0.0.0")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: ":: nearest the peer names no host either",
            strategy: WALK,
            honour: XFF,
            peer: LB_PEER,
            headers: &[("x-forwarded-for", "::")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded: [::] bracketed",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=\"[::]\"")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded: space before =",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "For =1.1.1.1")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded: space after =",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for= 1.1.1.1")],
            client: LB_PEER,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "malformed,opaque_hop",
        },
        Case {
            name: "forwarded: spaces around ; stay tolerated",
            strategy: WALK,
            honour: FWD,
            peer: LB_PEER,
            headers: &[("forwarded", "for=198.51.100.7 ; proto=https")],
            client: CLIENT,
            provider: Some("lb"),
            egress: Some(LB_PEER),
            flags: "",
        },
    ]);
}
