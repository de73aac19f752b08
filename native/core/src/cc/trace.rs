//! A congestion-control trace of one transport: every packet the bridge sent it with a transport-wide
//! number, every transport-cc feedback it sent back (the plain RTCP), and the probe clusters' opening
//! and closing, each at its time on the transport's clock. Replaying one through an [`Estimator`]
//! reproduces the estimate the bridge had (tests keep traces recorded from real browsers behind the
//! impairment relay). Written only when `[videobridge.cc] trace-dir` is set: a debugging aid, never on
//! by default, since it writes a line per packet.
//!
//! The format is text, one record per line, times in microseconds:
//! `S <seq> <size> <at> <ssrc> <rtp seq>` (sent; the SSRC in hex and the RTP sequence number as the
//! receiver sees them, which older traces lack),
//! `F <at> <hex>` (feedback), `O <cluster> <at>` and `C <cluster> <at>`
//! (a probe cluster opened, closed); `#` starts a comment.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use super::{micros, Estimator, ProbeResult};
use crate::rtcp::{RtcpPacket, TransportCc};

/// A trace file being written. Errors writing it end the trace (counted nowhere else: it is a debug aid).
#[derive(Debug)]
pub struct TraceWriter {
    out: Option<BufWriter<File>>,
    line: String,
}

impl TraceWriter {
    /// Creates `dir/cc-<transport>-<unix seconds>.trace` with a header comment.
    pub fn create(dir: &Path, transport: u64) -> std::io::Result<Self> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = File::create(dir.join(format!("cc-{transport}-{secs}.trace")))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "# sluice cc trace: transport {transport}")?;
        Ok(TraceWriter {
            out: Some(out),
            line: String::with_capacity(256),
        })
    }

    fn emit(&mut self) {
        if let Some(out) = self.out.as_mut() {
            if out.write_all(self.line.as_bytes()).is_err() {
                self.out = None;
            }
        }
        self.line.clear();
    }

    pub fn sent(&mut self, seq: u16, size: usize, at: Duration, ssrc: u32, rtp_seq: u16) {
        let _ = writeln!(
            self.line,
            "S {seq} {size} {} {ssrc:08x} {rtp_seq}",
            micros(at)
        );
        self.emit();
    }

    pub fn feedback(&mut self, at: Duration, packet: &[u8]) {
        let _ = write!(self.line, "F {} ", micros(at));
        for b in packet {
            let _ = write!(self.line, "{b:02x}");
        }
        self.line.push('\n');
        self.emit();
    }

    pub fn cluster(&mut self, open: bool, id: u8, at: Duration) {
        let kind = if open { 'O' } else { 'C' };
        let _ = writeln!(self.line, "{kind} {id} {}", micros(at));
        self.emit();
    }

    /// Writes a comment line (e.g. what the link was).
    pub fn comment(&mut self, text: &str) {
        let _ = writeln!(self.line, "# {text}");
        self.emit();
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }
}

/// One record of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Sent { seq: u16, size: usize, at: Duration },
    Feedback { at: Duration, packet: Vec<u8> },
    Cluster { open: bool, id: u8, at: Duration },
}

impl Record {
    pub fn at(&self) -> Duration {
        match self {
            Record::Sent { at, .. } | Record::Feedback { at, .. } | Record::Cluster { at, .. } => {
                *at
            }
        }
    }
}

/// Parses a trace; a line that does not parse is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    let us = |s: Option<&str>, n: usize| -> Result<Duration, String> {
        let v: u64 = s
            .ok_or(format!("line {n}: no time"))?
            .parse()
            .map_err(|e| format!("line {n}: {e}"))?;
        Ok(Duration::from_micros(v))
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(' ');
        let record = match f.next() {
            Some("S") => {
                let seq = f.next().and_then(|s| s.parse().ok());
                let size = f.next().and_then(|s| s.parse().ok());
                let (Some(seq), Some(size)) = (seq, size) else {
                    return Err(format!("line {n}: {line}"));
                };
                Record::Sent {
                    seq,
                    size,
                    at: us(f.next(), n)?,
                }
            }
            Some("F") => {
                let at = us(f.next(), n)?;
                let hex = f.next().ok_or(format!("line {n}: no packet"))?;
                let packet = (0..hex.len())
                    .step_by(2)
                    .map(|j| {
                        hex.get(j..j + 2)
                            .and_then(|b| u8::from_str_radix(b, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or(format!("line {n}: bad hex"))?;
                Record::Feedback { at, packet }
            }
            Some(kind @ ("O" | "C")) => {
                let id = f
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or(format!("line {n}: {line}"))?;
                Record::Cluster {
                    open: kind == "O",
                    id,
                    at: us(f.next(), n)?,
                }
            }
            _ => return Err(format!("line {n}: {line}")),
        };
        out.push(record);
    }
    Ok(out)
}

/// Replays `records` through `estimator`, calling `each` after every feedback with its time and the
/// probe result it made, if any.
pub fn replay(
    records: &[Record],
    estimator: &mut Estimator,
    mut each: impl FnMut(Duration, &Estimator, Option<ProbeResult>),
) -> Result<(), String> {
    for r in records {
        match r {
            Record::Sent { seq, size, at } => estimator.on_packet_sent(*seq, *size, *at),
            Record::Cluster { open: true, id, .. } => estimator.clusters().open(*id),
            Record::Cluster {
                open: false,
                id,
                at,
            } => estimator.clusters().close(*id, *at),
            Record::Feedback { at, packet } => {
                let feedback: TransportCc<'_> = match RtcpPacket::parse(packet) {
                    Ok(RtcpPacket::TransportCc(t)) => t,
                    other => return Err(format!("not transport-cc feedback: {other:?}")),
                };
                // A feedback the estimator refuses is counted there, as it was live.
                let _ = estimator.on_feedback(&feedback, *at);
                let probe = estimator.clusters().take_result();
                each(*at, estimator, probe);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cc::{EstimatorConfig, FeedbackBuilder};

    #[test]
    fn a_written_trace_parses_back_and_replays_to_the_same_estimate() {
        let dir = std::env::temp_dir().join(format!("sluice-cc-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut live = Estimator::new(EstimatorConfig::default());
        let mut builder = FeedbackBuilder::new(1, 2);
        let mut buf = [0u8; 1500];
        {
            let mut w = TraceWriter::create(&dir, 7).unwrap();
            w.comment("link 1000 kbit/s");
            for i in 0..300u16 {
                let at = Duration::from_millis(u64::from(i) * 10);
                live.on_packet_sent(i, 1200, at);
                w.sent(i, 1200, at, 0x1234, i);
                if i == 100 {
                    live.clusters().open(1);
                    w.cluster(true, 1, at);
                }
                if i == 103 {
                    live.clusters().close(1, at);
                    w.cluster(false, 1, at);
                }
                builder.on_arrival(i, at + Duration::from_millis(30 + u64::from(i % 7)));
                if i % 10 == 9 {
                    let fb_at = at + Duration::from_millis(50);
                    while let Some(n) = builder.write(&mut buf).unwrap() {
                        let RtcpPacket::TransportCc(t) = RtcpPacket::parse(&buf[..n]).unwrap()
                        else {
                            unreachable!()
                        };
                        live.on_feedback(&t, fb_at).unwrap();
                        w.feedback(fb_at, &buf[..n]);
                    }
                }
            }
        }
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.starts_with("# sluice cc trace: transport 7\n# link 1000 kbit/s\n"));
        let records = parse(&text).unwrap();
        assert_eq!(records.len(), 300 + 30 + 2);
        let mut replayed = Estimator::new(EstimatorConfig::default());
        let mut feedbacks = 0;
        replay(&records, &mut replayed, |_, _, _| feedbacks += 1).unwrap();
        assert_eq!(feedbacks, 30);
        assert_eq!(replayed.stats(), live.stats());
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        assert_eq!(parse("S 1 2\n"), Err("line 1: no time".into()));
        assert_eq!(parse("# x\nX 1\n"), Err("line 2: X 1".into()));
        assert_eq!(parse("F 10 8g\n"), Err("line 1: bad hex".into()));
        assert_eq!(parse("O 1 5\n").unwrap().len(), 1);
    }
}
