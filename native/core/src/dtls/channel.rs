//! The in-memory "socket" under OpenSSL: one received datagram in, outgoing records packed into datagrams.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use super::record::{self, RECORD_HEADER_LEN};

/// Datagram I/O for an `SslStream`, with no socket.
///
/// Reads: OpenSSL's DTLS record layer reads one whole datagram per `read` call; we hold at most
/// one (the one `DtlsConn::handle_datagram` is processing) and answer `WouldBlock` otherwise.
///
/// Writes: during the handshake OpenSSL stacks a buffering BIO on ours and hands us several
/// records per `write` (what it thinks fits one datagram); afterwards one record per `write`.
/// OpenSSL fits each handshake fragment to the MTU we gave it (`SSL_set_mtu`), but its packing
/// ignores AEAD expansion (nonce and tag) of encrypted records, so a batch can exceed the MTU.
/// We therefore split every write into records (RFC 6347 section 4.1 framing) and pack whole
/// records into datagrams ourselves while the sum stays within the MTU; `flush` (end of a
/// flight) closes the datagram.
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

    /// Closes the pending datagram and returns a mark of everything queued so far.
    pub(crate) fn tx_mark(&mut self) -> usize {
        self.finish_datagram();
        self.tx.len()
    }

    /// Whether anything was written since `mark`.
    pub(crate) fn wrote_since(&self, mark: usize) -> bool {
        self.tx.len() > mark || !self.tx_current.is_empty()
    }

    /// Forgets everything written since `mark`.
    pub(crate) fn truncate_tx(&mut self, mark: usize) {
        self.tx_current.clear();
        self.tx.truncate(mark);
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

impl MemoryChannel {
    fn push_record(&mut self, record: &[u8]) {
        if !self.tx_current.is_empty() && self.tx_current.len() + record.len() > self.mtu {
            self.finish_datagram();
        }
        self.tx_current.extend_from_slice(record);
    }
}

impl Write for MemoryChannel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            // OpenSSL only writes whole records; if that ever fails to parse, keep the rest whole.
            let len = match record::parse_record(rest) {
                Ok((_, fragment, _)) => RECORD_HEADER_LEN + fragment.len(),
                Err(_) => rest.len(),
            };
            let (record, next) = rest.split_at(len.min(rest.len()));
            self.push_record(record);
            rest = next;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.finish_datagram();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DTLS 1.2 handshake record of `len` bytes in total.
    fn record(len: usize) -> Vec<u8> {
        let body = len - RECORD_HEADER_LEN;
        let mut out = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
        out.extend_from_slice(&u16::try_from(body).expect("small").to_be_bytes());
        out.resize(len, 0xaa);
        out
    }

    fn sizes(ch: &mut MemoryChannel) -> Vec<usize> {
        std::iter::from_fn(|| ch.pop_tx())
            .map(|d| d.len())
            .collect()
    }

    #[test]
    fn packs_records_up_to_mtu() {
        let mut ch = MemoryChannel::new(100);
        ch.write_all(&record(40)).expect("memory write");
        ch.write_all(&record(40)).expect("memory write");
        ch.write_all(&record(40)).expect("memory write"); // would make 120 > 100
        ch.flush().expect("memory flush");
        ch.write_all(&record(20)).expect("memory write");
        ch.finish_datagram();
        assert_eq!(sizes(&mut ch), vec![80, 40, 20]);
    }

    #[test]
    fn splits_a_multi_record_write_at_the_mtu() {
        // OpenSSL's buffering BIO hands over 58+58+99+14+61 = 290 bytes for a 280-byte MTU.
        let mut ch = MemoryChannel::new(280);
        let batch: Vec<u8> = [58, 58, 99, 14, 61].into_iter().flat_map(record).collect();
        assert_eq!(ch.write(&batch).expect("memory write"), batch.len());
        ch.flush().expect("memory flush");
        assert_eq!(sizes(&mut ch), vec![229, 61]);
    }

    #[test]
    fn oversized_single_record_gets_its_own_datagram() {
        let mut ch = MemoryChannel::new(100);
        ch.write_all(&record(30)).expect("memory write");
        ch.write_all(&record(150)).expect("memory write");
        ch.write_all(&record(30)).expect("memory write");
        ch.finish_datagram();
        assert_eq!(sizes(&mut ch), vec![30, 150, 30]);
    }

    #[test]
    fn unparsable_write_is_kept_whole() {
        let mut ch = MemoryChannel::new(100);
        ch.write_all(&[1, 2, 3]).expect("memory write");
        ch.finish_datagram();
        assert_eq!(sizes(&mut ch), vec![3]);
    }

    #[test]
    fn writes_after_a_mark_can_be_taken_back() {
        let mut ch = MemoryChannel::new(100);
        ch.write_all(&record(30)).expect("memory write");
        let mark = ch.tx_mark();
        assert!(!ch.wrote_since(mark));
        ch.write_all(&record(20)).expect("memory write");
        assert!(ch.wrote_since(mark));
        ch.flush().expect("memory flush");
        ch.write_all(&record(20)).expect("memory write");
        ch.truncate_tx(mark);
        assert!(!ch.wrote_since(mark));
        assert_eq!(sizes(&mut ch), vec![30]);
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
