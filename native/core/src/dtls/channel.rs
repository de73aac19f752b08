//! The in-memory "socket" under OpenSSL: one received datagram in, outgoing records packed into datagrams.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Datagram I/O for an `SslStream`, with no socket.
///
/// Reads: OpenSSL's DTLS record layer reads one whole datagram per `read` call; we hold at most
/// one (the one `DtlsConn::handle_datagram` is processing) and answer `WouldBlock` otherwise.
///
/// Writes: OpenSSL writes one record per `write` call, each already fitted to the MTU we gave it
/// (`SSL_set_mtu`). We pack consecutive records of a flight into one datagram while the sum stays
/// within the MTU; `flush` (sent by OpenSSL at the end of a flight) closes the datagram.
#[derive(Debug)]
pub(crate) struct MemoryChannel {
    rx: Vec<u8>,
    rx_pending: bool,
    tx_current: Vec<u8>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

impl MemoryChannel {
    pub(crate) fn new(mtu: usize) -> Self {
        MemoryChannel {
            rx: Vec::new(),
            rx_pending: false,
            tx_current: Vec::new(),
            tx: VecDeque::new(),
            mtu,
        }
    }

    /// Queues one datagram for OpenSSL to read. Returns false if a previous one was never read
    /// (it is replaced; the caller counts it as dropped).
    pub(crate) fn push_rx(&mut self, datagram: &[u8]) -> bool {
        let was_unread = self.rx_pending;
        // Reuses the buffer: no allocation once it has grown to the largest datagram seen.
        self.rx.clear();
        self.rx.extend_from_slice(datagram);
        self.rx_pending = true;
        !was_unread
    }

    /// Forgets an unread datagram; returns whether there was one.
    pub(crate) fn discard_rx(&mut self) -> bool {
        std::mem::replace(&mut self.rx_pending, false)
    }

    /// Closes the datagram being filled so `pop_tx` can return it.
    pub(crate) fn finish_datagram(&mut self) {
        if !self.tx_current.is_empty() {
            let datagram = std::mem::take(&mut self.tx_current);
            self.tx.push_back(datagram);
        }
    }

    pub(crate) fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    pub(crate) fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }
}

impl Read for MemoryChannel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.rx_pending {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.rx_pending = false;
        // A datagram longer than OpenSSL's buffer is cut, like a short recv() would; OpenSSL then
        // drops the incomplete record. DtlsConn refuses such datagrams before they get here.
        let n = self.rx.len().min(buf.len());
        buf[..n].copy_from_slice(&self.rx[..n]);
        Ok(n)
    }
}

impl Write for MemoryChannel {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        if record.is_empty() {
            return Ok(0);
        }
        if !self.tx_current.is_empty() && self.tx_current.len() + record.len() > self.mtu {
            self.finish_datagram();
        }
        self.tx_current.extend_from_slice(record);
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.finish_datagram();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_records_up_to_mtu() {
        let mut ch = MemoryChannel::new(100);
        ch.write_all(&[1; 40]).expect("memory write");
        ch.write_all(&[2; 40]).expect("memory write");
        ch.write_all(&[3; 40]).expect("memory write"); // would make 120 > 100
        ch.flush().expect("memory flush");
        ch.write_all(&[4; 10]).expect("memory write");
        ch.finish_datagram();
        let sizes: Vec<usize> = std::iter::from_fn(|| ch.pop_tx()).map(|d| d.len()).collect();
        assert_eq!(sizes, vec![80, 40, 10]);
    }

    #[test]
    fn reads_one_datagram_then_would_block() {
        let mut ch = MemoryChannel::new(1200);
        assert!(ch.push_rx(b"hello"));
        let mut buf = [0u8; 3];
        assert_eq!(ch.read(&mut buf).expect("pending"), 3);
        assert_eq!(&buf, b"hel");
        let err = ch.read(&mut buf).expect_err("nothing pending");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(ch.push_rx(b"a"));
        assert!(!ch.push_rx(b"b"));
        assert!(ch.discard_rx());
        assert!(!ch.discard_rx());
    }
}
