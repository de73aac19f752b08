//! NTP timestamp helpers (RFC 3550 4, 6.4.1). Pure: callers pass the wall-clock time in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ReportBlock;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// 64-bit NTP timestamp (32.32 fixed point seconds since 1900) for a time since the Unix epoch.
///
/// The seconds wrap modulo 2^32 as NTP eras do.
pub fn ntp_from_unix(since_unix_epoch: Duration) -> u64 {
    let secs = since_unix_epoch
        .as_secs()
        .wrapping_add(NTP_UNIX_OFFSET_SECS)
        & 0xffff_ffff;
    // subsec_nanos < 1e9, so the shifted value < 2^62 and the quotient < 2^32.
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    secs << 32 | frac
}

/// 64-bit NTP timestamp for a given wall-clock time; times before 1970 map to the Unix epoch.
pub fn ntp_from_system_time(t: SystemTime) -> u64 {
    ntp_from_unix(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

/// The middle 32 bits of an NTP timestamp, as used by LSR (RFC 3550 6.4.1).
pub fn ntp_middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip time from a report block (RFC 3550 6.4.1: A - LSR - DLSR), where `arrival_ntp` is
/// the NTP time the report arrived. `None` when the block carries no LSR or the result is negative.
pub fn round_trip_time(arrival_ntp: u64, block: &ReportBlock) -> Option<Duration> {
    if block.last_sr == 0 {
        return None;
    }
    let a = ntp_middle32(arrival_ntp);
    let rtt = a
        .wrapping_sub(block.last_sr)
        .wrapping_sub(block.delay_since_last_sr);
    // Values in the upper half are negative differences after wrapping.
    if rtt > u32::MAX / 2 {
        return None;
    }
    // 16.16 fixed point seconds.
    let nanos = (u64::from(rtt) * 1_000_000_000) >> 16;
    Some(Duration::from_nanos(nanos))
}
