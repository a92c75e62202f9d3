//! Arbitrary bytes as `Forwarded` and `X-Forwarded-For` lines through the
//! client IP stage, with a few trusted sets, every strategy and small caps,
//! checking the stage's promises on every input.
//!
//! Input: byte 0 picks the honoured headers (bits 0-1), the strategy (bits
//! 2-4) and the peer (bits 5-7);
//! byte 1 the caps; the rest is split on `\n` into header lines, each line's
//! first byte choosing the header (even: `Forwarded`, odd: `X-Forwarded-For`).
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vigil_engine::{
    ChainStrategy, ClientIpConfig, ClientIpStage, ForwardedHeaders, NetworkFacts, Node,
    RequestView, TrustedProxies, classify,
};

const PEERS: [&str; 8] = [
    "10.0.0.2", "203.0.113.9", "2001:db8:cd::1", "::ffff:10.0.0.3",
    "198.51.100.7", "192.168.1.1", "2001:db8:1::1", "185.46.212.1",
];

fn trusted() -> &'static TrustedProxies {
    static SETS: OnceLock<TrustedProxies> = OnceLock::new();
    SETS.get_or_init(|| {
        let nets = |l: &[&str]| l.iter().filter_map(|n| n.parse().ok()).collect();
        TrustedProxies::new(vec![
            ("lb".into(), nets(&["10.0.0.0/8", "fd00::/8"])),
            ("cdn".into(), nets(&["203.0.113.0/24", "2001:db8:cd::/48"])),
            ("zscaler".into(), nets(&["185.46.212.0/22", "10.99.0.0/16", "2a03:eec0::/32"])),
        ])
        .unwrap_or_default()
    })
}

fuzz_target!(|data: &[u8]| {
    let (Some(&select), Some(&caps)) = (data.first(), data.get(1)) else { return };
    let honoured = ForwardedHeaders { forwarded: select & 1 != 0, x_forwarded_for: select & 2 != 0 };
    let strategy = match (select >> 2) & 7 {
        n @ 4.. => ChainStrategy::Hops(n - 4),
        _ => ChainStrategy::Walk,
    };
    let peer: IpAddr = PEERS[usize::from(select >> 5)].parse().unwrap();
    let max_hops = usize::from(caps & 0x1f);
    let max_header_bytes = [0, 7, 64, 300, 8192, 1, 33, 4096][usize::from(caps >> 5)];

    let mut headers = HeaderMap::new();
    for line in data[2..].split(|b| *b == b'\n').take(64) {
        let Some((&which, value)) = line.split_first() else { continue };
        let Ok(v) = HeaderValue::from_bytes(value) else { continue };
        headers.append(if which % 2 == 0 { "forwarded" } else { "x-forwarded-for" }, v);
    }

    let stage = ClientIpStage::new(ClientIpConfig {
        headers: honoured,
        strategy,
        trusted: trusted().clone(),
        max_header_bytes,
        max_hops,
    });
    let view = RequestView { peer, headers: &headers, now_secs: 0, tls: Default::default(), facts: Default::default() };
    let got = stage.resolve(&view);

    assert!(got.chain.len() <= max_hops, "hop cap broken");
    assert!(
        got.addr == got.peer || got.chain.iter().any(|h| h.node == Node::Ip(got.addr)),
        "client is neither the peer nor a hop"
    );
    let peer_trusted = trusted().lookup(got.peer).is_some();
    if !peer_trusted {
        assert_eq!(got.addr, got.peer, "an untrusted peer's headers were believed");
    }
    if strategy == ChainStrategy::Walk
        && peer_trusted
        && !got.flags.all_trusted
        && !got.flags.opaque_hop
    {
        assert!(trusted().lookup(got.addr).is_none(), "a trusted hop was taken as the client");
    }

    // The other honoured set on the same request, and how the two compare.
    let other = stage.resolve_with(&view, ForwardedHeaders::BOTH);
    let _ = classify(&NetworkFacts::from(&got), &NetworkFacts::from(&other));
});
