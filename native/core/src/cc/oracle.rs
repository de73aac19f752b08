//! A checker of [`FeedbackBuilder`](super::FeedbackBuilder) output, for the unit tests and the
//! `twcc_write` fuzz target: it sees every arrival the builder was given and every packet it
//! wrote, parses each with the transport-cc parser and checks it against what arrived. Allocates
//! freely; not for the packet path.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{micros, FeedbackCounters, SeqUnwrapper};
use crate::rtcp::{RtcpPacket, FMT_TWCC, PT_RTPFB};

/// Reference time wraps at 2^24 x 64 ms; in 250 us ticks that is 2^24 x 256.
const TICK_WRAP: i64 = (1 << 24) * 256;

#[derive(Debug, Default)]
pub struct FeedbackOracle {
    unwrap: SeqUnwrapper,
    /// First arrival given for each sequence number, us.
    arrivals: HashMap<u64, i64>,
    reported: HashSet<u64>,
    fed: u64,
    received_statuses: u64,
    packets: u64,
    last_base: Option<u64>,
}

impl FeedbackOracle {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same arrival the builder is given.
    pub fn on_arrival(&mut self, seq: u16, at: Duration) {
        let s = self.unwrap.update(seq);
        self.fed += 1;
        self.arrivals.entry(s).or_insert(micros(at));
    }

    /// Checks one written packet (`max_bytes` is the builder's limit); panics on disagreement.
    /// Returns the statuses it reported.
    pub fn check(&mut self, packet: &[u8], max_bytes: usize) -> usize {
        assert!(
            packet.len() <= max_bytes,
            "{} bytes over {max_bytes}",
            packet.len()
        );
        assert_eq!(packet.len() % 4, 0, "not whole words");
        assert_eq!(packet[0], 0x80 | FMT_TWCC, "V=2, P=0, FMT=15");
        assert_eq!(packet[1], PT_RTPFB);
        let parsed = RtcpPacket::parse(packet).expect("written feedback parses");
        let RtcpPacket::TransportCc(fb) = parsed else {
            panic!("not transport-cc: {parsed:?}");
        };
        assert_eq!(
            fb.fb_pkt_count, self.packets as u8,
            "fb pkt count counts packets"
        );
        self.packets += 1;
        assert!(fb.packet_status_count > 0, "an empty feedback");

        let base = self.unwrap.peek(fb.base_sequence_number);
        if let Some(last) = self.last_base {
            assert!(base > last, "feedback went back: base {base} after {last}");
        }
        self.last_base = Some(base);
        let mut ticks = i64::from(fb.reference_time) * 256;
        let mut count = 0usize;
        for (i, status) in fb.packets().enumerate() {
            let status = status.expect("every status decodes");
            let s = base + i as u64;
            assert_eq!(status.sequence_number, s as u16);
            assert!(
                self.reported.insert(s),
                "sequence number {s} reported twice"
            );
            let arrival = self.arrivals.get(&s);
            match status.delta_ticks {
                None => assert!(arrival.is_none(), "{s} arrived but reported lost"),
                Some(delta) => {
                    ticks += i64::from(delta);
                    let at = arrival.unwrap_or_else(|| panic!("{s} reported but never arrived"));
                    assert_eq!(
                        (ticks - at / 250).rem_euclid(TICK_WRAP),
                        0,
                        "{s}: reported at tick {ticks}, arrived at {at} us"
                    );
                    self.received_statuses += 1;
                }
            }
            count += 1;
        }
        assert_eq!(count, usize::from(fb.packet_status_count));
        count
    }

    /// After the builder was drained: every arrival was recorded, a duplicate or too old, and
    /// every recorded one was reported received or evicted.
    pub fn finish(&self, counters: &FeedbackCounters) {
        assert_eq!(
            counters.recorded + counters.duplicate + counters.too_old,
            self.fed,
            "{counters:?}"
        );
        assert_eq!(
            counters.recorded,
            self.received_statuses + counters.evicted,
            "{counters:?}"
        );
        assert_eq!(counters.feedback_packets, self.packets);
    }
}
