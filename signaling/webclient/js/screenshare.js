// Screen sharing as Jitsi clients send it: getDisplayMedia as a second video source of ours, named
// "<nick>-v1" with videoType "desktop", announced to the focus with a Jingle source-add (the bridge and the
// others learn it from there) and to the bridge with SourceVideoTypeMessage; withdrawn with source-remove.
// High resolution at a low frame rate. Pure helpers; conference.js does the session work.

import { jingleXml, mediaToContent, parseSdp, toXml } from './jingle-sdp.js';

export const SCREEN_CONSTRAINTS = Object.freeze({
  video: { width: { max: 1920 }, height: { max: 1080 }, frameRate: { max: 5 } },
  audio: false,
});

/** The one encoding of a screen share: sharp text over motion. */
export const SCREEN_ENCODING = Object.freeze({ maxBitrate: 2500000, maxFramerate: 5 });

export function screenSourceName(nick) {
  return `${nick}-v1`;
}

/**
 * The sources our answer sends on the m-line `mid`: {ssrcs (primary first), groups, msid}, or null when
 * the line sends nothing.
 */
export function localSourceOf(sdp, mid) {
  const parsed = parseSdp(sdp);
  const m = parsed.media.find((x) => x.attrs.some(([k, v]) => k === 'mid' && v === mid));
  if (!m) return null;
  const c = mediaToContent(m, parsed.session);
  if (!['sendrecv', 'sendonly'].includes(c.direction) || !c.description.sources.length) return null;
  const fid = c.description.ssrcGroups.filter((g) => g.semantics === 'FID');
  const secondary = new Set(fid.flatMap((g) => g.ssrcs.slice(1)));
  const ssrcs = c.description.sources.map((s) => s.ssrc).sort((a, b) => Number(secondary.has(a)) - Number(secondary.has(b)));
  return { ssrcs, groups: fid, msid: c.description.sources[0].msid ?? null };
}

/** source-add / source-remove for our screen source, on the session's video content. */
export function screenSourcesXml(remote, action, { nick, source, responder }) {
  const video = remote.contents.find((c) => c.media === 'video');
  const name = screenSourceName(nick);
  return toXml(jingleXml({
    action,
    sid: remote.sid,
    initiator: remote.initiator,
    responder,
    contents: [{
      name: video.name,
      creator: video.creator ?? 'initiator',
      senders: video.senders ?? 'both',
      description: {
        media: 'video', payloadTypes: [], extmaps: [], extmapAllowMixed: false, rtcpMux: false,
        sources: source.ssrcs.map((ssrc) => ({ ssrc, name, msid: source.msid ?? undefined, videoType: 'desktop' })),
        ssrcGroups: source.groups,
      },
    }],
  }));
}
