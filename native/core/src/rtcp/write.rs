//! RTCP writers into caller buffers. Each returns the bytes written; none allocates.

use super::feedback::{remb_exp_mantissa, REMB_ID};
use super::sdes::SDES_CNAME;
use super::{
    ReportBlock, RtcpError, FMT_AFB, FMT_FIR, FMT_NACK, FMT_PLI, PT_BYE, PT_PSFB, PT_RR, PT_RTPFB,
    PT_SDES, PT_SR, RTCP_VERSION,
};

/// Largest RC/SC value (5 bits).
const MAX_COUNT: usize = 31;

/// Takes the first `len` bytes of `buf` for a packet of `len` bytes (a multiple of 4), zeroed, with
/// the common header written (RFC 3550 6.4.1, P = 0).
fn packet(buf: &mut [u8], len: usize, count: u8, pt: u8) -> Result<&mut [u8], RtcpError> {
    debug_assert!(
        len.is_multiple_of(4) && len >= 4,
        "RTCP packets are whole 32-bit words"
    );
    let words = u16::try_from(len / 4 - 1).map_err(|_| RtcpError::TooLarge)?;
    let out = buf.get_mut(..len).ok_or(RtcpError::NoRoom)?;
    out.fill(0);
    out[0] = RTCP_VERSION << 6 | (count & 0x1f);
    out[1] = pt;
    out[2..4].copy_from_slice(&words.to_be_bytes());
    Ok(out)
}

fn put32(out: &mut [u8], at: usize, v: u32) {
    if let Some(field) = out.get_mut(at..at + 4) {
        field.copy_from_slice(&v.to_be_bytes());
    }
}

fn put_blocks(out: &mut [u8], at: usize, blocks: &[ReportBlock]) {
    let region = out.get_mut(at..).unwrap_or(&mut []);
    for (dst, block) in region
        .as_chunks_mut::<{ ReportBlock::LEN }>()
        .0
        .iter_mut()
        .zip(blocks)
    {
        block.write_to(dst);
    }
}

/// Writes a receiver report (RFC 3550 6.4.2) with up to 31 blocks.
pub fn write_receiver_report(
    buf: &mut [u8],
    sender_ssrc: u32,
    blocks: &[ReportBlock],
) -> Result<usize, RtcpError> {
    if blocks.len() > MAX_COUNT {
        return Err(RtcpError::TooLarge);
    }
    let len = 8 + ReportBlock::LEN * blocks.len();
    let out = packet(buf, len, blocks.len() as u8, PT_RR)?;
    put32(out, 4, sender_ssrc);
    put_blocks(out, 8, blocks);
    Ok(len)
}

/// Writes a sender report (RFC 3550 6.4.1) with up to 31 blocks.
pub fn write_sender_report(
    buf: &mut [u8],
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    blocks: &[ReportBlock],
) -> Result<usize, RtcpError> {
    if blocks.len() > MAX_COUNT {
        return Err(RtcpError::TooLarge);
    }
    let len = 28 + ReportBlock::LEN * blocks.len();
    let out = packet(buf, len, blocks.len() as u8, PT_SR)?;
    put32(out, 4, ssrc);
    put32(out, 8, (ntp >> 32) as u32);
    put32(out, 12, ntp as u32);
    put32(out, 16, rtp_ts);
    put32(out, 20, packets);
    put32(out, 24, octets);
    put_blocks(out, 28, blocks);
    Ok(len)
}

/// Writes an SDES packet with one chunk holding one CNAME item (RFC 3550 6.5.1).
pub fn write_sdes_cname(buf: &mut [u8], ssrc: u32, cname: &[u8]) -> Result<usize, RtcpError> {
    let cname_len = u8::try_from(cname.len()).map_err(|_| RtcpError::TooLarge)?;
    // SSRC, type, length, text, then at least one null octet up to a 32-bit boundary.
    let chunk_len = (4 + 2 + cname.len() + 1).next_multiple_of(4);
    let len = 4 + chunk_len;
    let out = packet(buf, len, 1, PT_SDES)?;
    put32(out, 4, ssrc);
    out[8] = SDES_CNAME;
    out[9] = cname_len;
    out[10..10 + cname.len()].copy_from_slice(cname);
    Ok(len)
}

/// Writes a BYE (RFC 3550 6.6) for up to 31 sources, without a reason.
pub fn write_bye(buf: &mut [u8], ssrcs: &[u32]) -> Result<usize, RtcpError> {
    if ssrcs.len() > MAX_COUNT {
        return Err(RtcpError::TooLarge);
    }
    let len = 4 + 4 * ssrcs.len();
    let out = packet(buf, len, ssrcs.len() as u8, PT_BYE)?;
    for (i, ssrc) in ssrcs.iter().enumerate() {
        put32(out, 4 + 4 * i, *ssrc);
    }
    Ok(len)
}

/// Writes a picture loss indication (RFC 4585 6.3.1).
pub fn write_pli(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Result<usize, RtcpError> {
    let out = packet(buf, 12, FMT_PLI, PT_PSFB)?;
    put32(out, 4, sender_ssrc);
    put32(out, 8, media_ssrc);
    Ok(12)
}

/// Writes a full intra request with one entry for `media_ssrc` (RFC 5104 4.3.1); the header's
/// media SSRC is 0 as the RFC requires.
pub fn write_fir(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    seq_nr: u8,
) -> Result<usize, RtcpError> {
    let out = packet(buf, 20, FMT_FIR, PT_PSFB)?;
    put32(out, 4, sender_ssrc);
    put32(out, 12, media_ssrc);
    out[16] = seq_nr;
    Ok(20)
}

/// Writes a generic NACK (RFC 4585 6.2.1), packing `lost` into PID/BLP pairs.
///
/// Any order is correct; ascending order (modulo 2^16) gives the fewest pairs. Duplicates are
/// folded when they fall in the current pair.
pub fn write_nack(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: &[u16],
) -> Result<usize, RtcpError> {
    let Some((&first, rest)) = lost.split_first() else {
        return Err(RtcpError::Empty);
    };
    const FCI_START: usize = 12;
    let mut at = FCI_START;
    let mut pid = first;
    let mut blp: u16 = 0;
    let mut put_pair = |at: &mut usize, pid: u16, blp: u16| -> Result<(), RtcpError> {
        let field = buf.get_mut(*at..*at + 4).ok_or(RtcpError::NoRoom)?;
        field[0..2].copy_from_slice(&pid.to_be_bytes());
        field[2..4].copy_from_slice(&blp.to_be_bytes());
        *at += 4;
        Ok(())
    };
    for &seq in rest {
        match seq.wrapping_sub(pid) {
            0 => {}
            d @ 1..=16 => blp |= 1 << (d - 1),
            _ => {
                put_pair(&mut at, pid, blp)?;
                pid = seq;
                blp = 0;
            }
        }
    }
    put_pair(&mut at, pid, blp)?;
    let len = at;
    let out = packet(buf, FCI_START, FMT_NACK, PT_RTPFB)?;
    // `packet` wrote a header for 12 bytes; fix the length for the FCI written after it.
    let words = u16::try_from(len / 4 - 1).map_err(|_| RtcpError::TooLarge)?;
    out[2..4].copy_from_slice(&words.to_be_bytes());
    put32(out, 4, sender_ssrc);
    put32(out, 8, media_ssrc);
    Ok(len)
}

/// Writes a REMB (draft-alvestrand-rmcat-remb) for up to 255 SSRCs; the bitrate is rounded down
/// to an 18-bit mantissa.
pub fn write_remb(
    buf: &mut [u8],
    sender_ssrc: u32,
    bitrate_bps: u64,
    ssrcs: &[u32],
) -> Result<usize, RtcpError> {
    let num_ssrc = u8::try_from(ssrcs.len()).map_err(|_| RtcpError::TooLarge)?;
    let len = 20 + 4 * ssrcs.len();
    let out = packet(buf, len, FMT_AFB, PT_PSFB)?;
    put32(out, 4, sender_ssrc);
    // SSRC of media source stays 0.
    out[12..16].copy_from_slice(&REMB_ID);
    let (exp, mantissa) = remb_exp_mantissa(bitrate_bps);
    put32(
        out,
        16,
        u32::from(num_ssrc) << 24 | u32::from(exp) << 18 | mantissa,
    );
    for (i, ssrc) in ssrcs.iter().enumerate() {
        put32(out, 20 + 4 * i, *ssrc);
    }
    Ok(len)
}
