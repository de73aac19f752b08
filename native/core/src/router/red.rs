//! The fan-out of an RFC 2198 redundant audio packet: a receiver that negotiated RED gets it as it came,
//! one that did not gets it stripped to its primary block (`rtp::strip_to_primary`), made once per packet
//! whatever the number of receivers. Payload types are the same for every member (the focus offers
//! everyone the same numbers, as Jicofo does, and the bridge rewrites none), so the stripped packet
//! carries the primary block's own payload type.

use std::time::Instant;

use crate::domain::{Codec, IdMap, PayloadMap, TransportId};
use crate::io::{Egress, MAX_DATAGRAM};
use crate::rtp::{strip_to_primary, RedPayload, RtpView};
use crate::stats::{Counters, DropReason};
use crate::transport::{TccOffset, Transport};

use super::Router;

/// What one receiver gets of a RED packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedVariant {
    /// The packet as it came: the receiver negotiated RED at its payload type.
    AsIs,
    /// The primary block alone, under the primary's payload type.
    Primary,
    /// Nothing: it negotiated neither.
    Nothing,
}

/// What a receiver with payload map `map` (None: none signalled) gets of a RED packet of payload type
/// `red_pt` whose primary has payload type `primary_pt`. A receiver whose audio payload types are
/// unknown gets the primary: every WebRTC peer decodes Opus, none is obliged to decode RED.
#[inline]
pub fn red_variant(map: Option<&PayloadMap>, red_pt: u8, primary_pt: u8) -> RedVariant {
    match map {
        Some(m) if m.get(red_pt) == Codec::Red => RedVariant::AsIs,
        Some(m) if m.has_audio() && m.get(primary_pt) != Codec::Audio => RedVariant::Nothing,
        _ => RedVariant::Primary,
    }
}

impl Router {
    /// Forwards a RED packet from member `from` to every other member, as it came or stripped to its
    /// primary (`red_variant`). A payload that does not parse goes to nobody (`RedMalformed`, counted on
    /// the sender by the caller), and so does the stripped variant when the sender's primary is not one
    /// of its audio payload types. Returns the number queued.
    // The shard's fields come separately so that it keeps the others borrowable.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_red(
        &self,
        now: Instant,
        from: TransportId,
        rtp: &RtpView<'_>,
        transports: &mut IdMap<Transport>,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> Result<usize, DropReason> {
        let red = RedPayload::parse(rtp.payload()).map_err(|_| DropReason::RedMalformed)?;
        let primary_pt = red.primary().pt;
        let primary_is_audio = self
            .payloads
            .get(&from)
            .is_some_and(|m| m.get(primary_pt) == Codec::Audio);
        let mut buf = [0u8; MAX_DATAGRAM];
        let stripped = if primary_is_audio {
            strip_to_primary(rtp, &red, &mut buf).map(|n| &buf[..n])
        } else {
            None
        };
        let packet = rtp.as_bytes();
        let mut tcc = TccOffset::new(packet);
        let mut tcc_stripped = TccOffset::new(stripped.unwrap_or(&[]));
        let mut queued = 0;
        for &m in &self.members {
            if m == from {
                continue;
            }
            let Some(r) = transports.get_mut(&m) else {
                continue;
            };
            let variant = red_variant(self.payloads.get(&m), rtp.payload_type(), primary_pt);
            let sent = match (variant, stripped) {
                (RedVariant::AsIs, _) => r.send_rtp(now, packet, &mut tcc, egress, total, |_| {}),
                (RedVariant::Primary, Some(s)) => {
                    r.send_rtp(now, s, &mut tcc_stripped, egress, total, |_| {})
                }
                (RedVariant::Primary, None) | (RedVariant::Nothing, _) => {
                    r.counters.drop(DropReason::NotNegotiated);
                    total.drop(DropReason::NotNegotiated);
                    false
                }
            };
            if sent {
                queued += 1;
            }
        }
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PayloadType;

    fn map(types: &[(u8, Codec)]) -> PayloadMap {
        let types: Vec<PayloadType> = types
            .iter()
            .map(|&(pt, codec)| PayloadType { pt, codec })
            .collect();
        PayloadMap::new(&types)
    }

    #[test]
    fn each_receiver_gets_red_the_primary_or_nothing_by_what_it_negotiated() {
        let both = map(&[(111, Codec::Audio), (63, Codec::Red), (100, Codec::Vp8)]);
        let opus = map(&[(111, Codec::Audio), (100, Codec::Vp8)]);
        let video_only = map(&[(100, Codec::Vp8)]);
        let other_audio = map(&[(0, Codec::Audio)]);
        assert_eq!(red_variant(Some(&both), 63, 111), RedVariant::AsIs);
        assert_eq!(red_variant(Some(&opus), 63, 111), RedVariant::Primary);
        // RED at another payload type than the sender's is not the same RED.
        assert_eq!(red_variant(Some(&both), 62, 111), RedVariant::Primary);
        assert_eq!(
            red_variant(Some(&other_audio), 63, 111),
            RedVariant::Nothing
        );
        // No audio signalled (or nothing at all): the primary, which every WebRTC peer decodes.
        assert_eq!(red_variant(Some(&video_only), 63, 111), RedVariant::Primary);
        assert_eq!(red_variant(None, 63, 111), RedVariant::Primary);
    }
}
