//! Router: one conference's forwarding domain. It knows its transports and, for every signalled SSRC,
//! the Producer that sends it. The shard applies it per packet; the Router itself touches no socket.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::rtp::ReceiverStats;
use crate::seam::{MediaKind, RouterId, SourceSpec, TransportId};

/// How often the bridge sends its own receiver reports to each sender (RFC 3550 6.2 allows 5 s;
/// WebRTC senders use them for loss-based rate control, so we report faster).
pub const RR_INTERVAL: Duration = Duration::from_millis(1000);

/// A keyframe request to one sender is sent at most this often: receivers joining together share one.
pub const KEYFRAME_REQUEST_MIN_INTERVAL: Duration = Duration::from_millis(300);

/// Ingress of one signalled SSRC.
pub struct Producer {
    pub transport: TransportId,
    pub kind: MediaKind,
    pub stats: ReceiverStats,
    pub last_keyframe_request: Option<Instant>,
    pub packets: u64,
}

pub struct Router {
    pub id: RouterId,
    /// Transports in join order; forwarding walks this list.
    pub members: Vec<TransportId>,
    pub producers: HashMap<u32, Producer>,
    /// The SSRC the bridge uses as the sender of its own RTCP in this conference.
    pub rtcp_ssrc: u32,
    pub next_report: Option<Instant>,
}

impl Router {
    pub fn new(id: RouterId) -> Self {
        let mut b = [0u8; 4];
        let rtcp_ssrc = match openssl::rand::rand_bytes(&mut b) {
            Ok(()) => u32::from_be_bytes(b) | 1,
            Err(_) => 0x5111_ce00 ^ id as u32,
        };
        Router {
            id,
            members: Vec::new(),
            producers: HashMap::new(),
            rtcp_ssrc,
            next_report: None,
        }
    }

    pub fn add_member(&mut self, transport: TransportId) {
        if !self.members.contains(&transport) {
            self.members.push(transport);
        }
    }

    /// Removes a transport and every Producer it owned.
    pub fn remove_member(&mut self, transport: TransportId) {
        self.members.retain(|t| *t != transport);
        self.producers.retain(|_, p| p.transport != transport);
    }

    /// Replaces the SSRC set of one transport (Colibri2 sources replace, never merge). Receive state of an
    /// SSRC that stays is kept. SSRCs owned by another transport are refused (returned).
    pub fn set_sources(&mut self, transport: TransportId, sources: &[SourceSpec]) -> Vec<u32> {
        let mut refused = Vec::new();
        self.producers
            .retain(|ssrc, p| p.transport != transport || sources.iter().any(|s| s.ssrc == *ssrc));
        for s in sources {
            match self.producers.get(&s.ssrc) {
                Some(p) if p.transport != transport => refused.push(s.ssrc),
                Some(_) => {}
                None => {
                    self.producers.insert(
                        s.ssrc,
                        Producer {
                            transport,
                            kind: s.kind,
                            stats: ReceiverStats::new(s.ssrc, s.clock_rate),
                            last_keyframe_request: None,
                            packets: 0,
                        },
                    );
                }
            }
        }
        refused
    }

    /// Video SSRCs whose sender should be asked for a keyframe now (rate-limited), e.g. when a receiver joins.
    pub fn keyframe_requests(
        &mut self,
        now: Instant,
        except: TransportId,
        ready: impl Fn(TransportId) -> bool,
    ) -> Vec<(TransportId, u32)> {
        let mut out = Vec::new();
        for (ssrc, p) in self.producers.iter_mut() {
            if p.kind != MediaKind::Video || p.transport == except || !ready(p.transport) {
                continue;
            }
            if Self::may_request_keyframe(p, now) {
                out.push((p.transport, *ssrc));
            }
        }
        out
    }

    /// Rate limit for keyframe requests to one Producer; records the request when allowed.
    pub fn may_request_keyframe(p: &mut Producer, now: Instant) -> bool {
        match p.last_keyframe_request {
            Some(t) if now.saturating_duration_since(t) < KEYFRAME_REQUEST_MIN_INTERVAL => false,
            _ => {
                p.last_keyframe_request = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ssrc: u32, kind: MediaKind) -> SourceSpec {
        SourceSpec {
            ssrc,
            kind,
            clock_rate: if kind == MediaKind::Audio {
                48000
            } else {
                90000
            },
        }
    }

    #[test]
    fn sources_replace_and_are_owned_by_one_transport() {
        let mut r = Router::new(1);
        r.add_member(10);
        r.add_member(11);
        assert!(r
            .set_sources(10, &[spec(1, MediaKind::Audio), spec(2, MediaKind::Video)])
            .is_empty());
        assert_eq!(
            r.set_sources(11, &[spec(2, MediaKind::Video), spec(3, MediaKind::Video)]),
            vec![2]
        );
        assert_eq!(r.producers[&2].transport, 10);
        r.set_sources(10, &[spec(2, MediaKind::Video)]);
        assert!(!r.producers.contains_key(&1));
        assert!(r.producers.contains_key(&2));
        r.remove_member(10);
        assert!(!r.producers.contains_key(&2));
        assert_eq!(r.members, vec![11]);
    }

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let mut r = Router::new(1);
        r.set_sources(10, &[spec(1, MediaKind::Audio), spec(2, MediaKind::Video)]);
        let t0 = Instant::now();
        assert_eq!(r.keyframe_requests(t0, 11, |_| true), vec![(10, 2)]);
        assert!(r
            .keyframe_requests(t0 + Duration::from_millis(100), 12, |_| true)
            .is_empty());
        assert_eq!(
            r.keyframe_requests(t0 + Duration::from_millis(400), 12, |_| true),
            vec![(10, 2)]
        );
        assert!(r
            .keyframe_requests(t0 + Duration::from_secs(5), 10, |_| true)
            .is_empty());
    }
}
