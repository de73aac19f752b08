//! Entry points for native/fuzz: the whole per-datagram path of a shard, without threads.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Shard, ShardConfig};
use crate::domain::FeedbackSsrcs;
use crate::dtls::DtlsCert;
use crate::ice::IceCredentials;
use crate::seam::Command;

thread_local! {
    static SHARD: RefCell<Option<Shard>> = const { RefCell::new(None) };
}

const KNOWN: &str = "127.0.0.1:40000";
const UNKNOWN: &str = "127.0.0.1:40001";

fn setup() -> Shard {
    let cert = DtlsCert::generate().expect("fuzz setup: certificate");
    let config = ShardConfig {
        bind: vec!["127.0.0.1:0".parse().expect("literal")],
        ..Default::default()
    };
    let mut shard = Shard::new(&config, cert).expect("fuzz setup: bind");
    let now = Instant::now();
    shard.handle_command(
        now,
        Command::CreateRouter {
            router: 1,
            feedback: FeedbackSsrcs {
                audio: 0xA0,
                video: 0xB0,
            },
        },
    );
    for (id, ufrag) in [(10, "fuzzufrag"), (11, "otherufrag")] {
        let ice = IceCredentials {
            ufrag: ufrag.into(),
            pwd: "fuzzpasswordfuzzpassword".into(),
        };
        shard.handle_command(
            now,
            Command::CreateTransport {
                router: 1,
                transport: id,
                ice,
                controlling: true,
            },
        );
    }
    shard
        .state
        .by_addr
        .insert(KNOWN.parse().expect("literal"), 10);
    shard
}

/// Routes one datagram through classify → STUN/DTLS/SRTP/RTCP handling, as from a known peer
/// (first byte even) or an unknown address (odd).
pub fn demux(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    SHARD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let shard = slot.get_or_insert_with(setup);
        let from: SocketAddr = if sel % 2 == 0 { KNOWN } else { UNKNOWN }
            .parse()
            .expect("literal");
        let local = shard.io.sockets()[0].local_addr();
        let mut buf = rest.to_vec();
        let Shard { io, state, .. } = shard;
        state.on_datagram(Instant::now(), local, from, &mut buf, io);
        // Never put fuzz output on the wire.
        io.discard();
    });
}
