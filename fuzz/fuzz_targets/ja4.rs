//! Arbitrary bytes through both ClientHello entry points and every JA4 form,
//! checking the parser's promises: no panic, the record cap holds, and a
//! hello that parses fingerprints to a well-formed string.
//!
//! Input: byte 0 picks the cap on the handshake body (`MAX_HELLO_BYTES` or a
//! small one, to reach the limit path); the rest is the bytes off the socket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::{ClientHello, MAX_HELLO_BYTES, Transport, ja4, ja4_o, ja4_r, ja4_ro};

fuzz_target!(|data: &[u8]| {
    let Some((&select, bytes)) = data.split_first() else { return };
    let cap = if select & 1 == 0 { MAX_HELLO_BYTES } else { usize::from(select) * 4 };

    for parsed in [
        ClientHello::from_records_capped(bytes, cap),
        ClientHello::from_handshake_capped(bytes, cap),
    ] {
        let Ok(hello) = parsed else { continue };
        assert!(hello.ciphers().len() * 2 <= cap, "cipher list past the cap");
        for t in [Transport::Tcp, Transport::Quic] {
            let fp = ja4(&hello, t).to_string();
            assert_eq!(fp.len(), 36, "ja4 is not a_b_c: {fp}");
            assert!(fp.is_ascii());
            assert_eq!(ja4_o(&hello, t).a(), ja4(&hello, t).a());
            assert!(ja4_r(&hello, t).starts_with(&fp[..10]));
            assert!(ja4_ro(&hello, t).starts_with(&fp[..10]));
        }
    }
});
