//! Addresses for endpoints that share one socket.
//!
//! Why: on loopback every 127.0.0.0/8 address is local, so one socket bound to 0.0.0.0 can stand for
//! thousands of endpoints, each with its own address 127.a.b.c on the same port. The bridge still sees
//! one address per endpoint, and the load generator sends and receives for all of them in whole
//! batches instead of one syscall per endpoint: core's `SendBatch::with_pktinfo` and
//! `RecvBatch::with_control` carry each datagram's local address (IP_PKTINFO).

use std::net::Ipv4Addr;

/// The loopback address of shared-socket endpoint `index`: 127.a.b.c with c in 1..=254, starting at
/// 127.1.0.1 (127.0.0.0/16 is left to everything else on the host).
pub fn loopback_ip(index: u32) -> Ipv4Addr {
    let c = (index % 254) as u8 + 1;
    let rest = index / 254;
    let b = (rest % 256) as u8;
    let a = (1 + rest / 256).min(254) as u8;
    Ipv4Addr::new(127, a, b, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ips_are_distinct_and_avoid_0_and_255() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000 {
            let ip = loopback_ip(i);
            assert!(seen.insert(ip), "{i} -> {ip}");
            let o = ip.octets();
            assert_eq!(o[0], 127);
            assert!(o[1] >= 1 && o[3] != 0 && o[3] != 255, "{ip}");
        }
    }
}
