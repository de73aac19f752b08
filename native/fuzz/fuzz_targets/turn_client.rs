#![no_main]
//! The load generator's TURN client fed arbitrary datagrams from its server: each is tried as
//! ChannelData and as a STUN answer to the request in flight (its transaction id and method patched
//! in, so answers get past the first check); the client never panics and never sends more than one
//! request per answer.

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_core::stun::{StunMessage, HEADER_LEN};
use sluice_loadgen::turn::{parse_channel_data, TurnClient, TurnConfig};

fuzz_target!(|data: &[u8]| {
    if let Some((_, len)) = parse_channel_data(data) {
        assert!(4 + len <= data.len());
    }
    let mut client = TurnClient::new(
        TurnConfig {
            server: "192.0.2.1:3478".parse().expect("literal"),
            username: "1:u".into(),
            password: "p".into(),
        },
        "198.51.100.1:10000".parse().expect("literal"),
    );
    let t0 = Instant::now();
    client.start(t0);
    let mut now = t0;
    for chunk in data.chunks(64).take(16) {
        let Some(sent) = client.poll_transmit() else {
            break;
        };
        let mut answer = chunk.to_vec();
        if answer.len() >= HEADER_LEN {
            // Same method and transaction as the request; class and attributes from the input.
            answer[0] = (answer[0] & 0x01) | (sent[0] & 0x3e);
            answer[1] = (answer[1] & 0x10) | (sent[1] & 0xef);
            answer[4..HEADER_LEN].copy_from_slice(&sent[4..HEADER_LEN]);
            let body = (answer.len() - HEADER_LEN) & !3;
            answer.truncate(HEADER_LEN + body);
            answer[2..4].copy_from_slice(&(body as u16).to_be_bytes());
        }
        if let Ok(msg) = StunMessage::parse(&answer) {
            client.handle(now, &msg);
        }
        now += Duration::from_millis(600);
        client.handle_timeout(now);
        let _ = (client.state(), client.relayed(), client.poll_timeout());
    }
});
