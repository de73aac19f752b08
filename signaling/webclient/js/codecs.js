// Which codec our camera is sent with, and whether as simulcast or as SVC (like Jitsi Meet's
// `videoQuality.preferredCodec`). The focus offers VP8, VP9, AV1 and H264 (VP8 first); by default Chrome
// takes VP8 and conference.js sends it in three simulcast layers. Asked for a codec (`?codec=vp9`, or
// `videoQuality.preferredCodec` in /config.json, which `sluice serve` does not write yet), the client puts it
// first in its answer (RTCRtpTransceiver.setCodecPreferences) and names it in the sender's encodings; asked
// for an SVC mode (`&svc=L3T3_KEY`, or
// `videoQuality.scalabilityMode`) it sends ONE encoding with that `scalabilityMode` instead of simulcast, so
// its session-accept signals one SSRC and its RTX (FID), no SIM group. VP9 and AV1 default to L3T3_KEY
// (k-SVC: 3 spatial layers, 180/360/720 from a 720p camera, each in 3 temporal layers), as Jitsi Meet sends
// them. No DOM: the caller hands in the config and the query string.

export const CODECS = Object.freeze(['VP8', 'VP9', 'AV1', 'H264']);

// Codecs that carry spatial layers in one SSRC (Chrome encodes L2Tx/L3Tx for these only).
const SPATIAL = new Set(['VP9', 'AV1']);

// L<spatial>T<temporal>, optionally _KEY (upper spatial layers depend on lower ones only at keyframes).
const MODE_RE = /^L([1-3])T([1-3])(_KEY)?$/;

// The SVC encoding's bitrate cap: what the three simulcast layers add up to (conference.js).
export const SVC_MAX_BITRATE = 2200000;

/** The codec named by `value` (case-insensitive), or null. */
export function codecName(value) {
  if (typeof value !== 'string') return null;
  const upper = value.trim().toUpperCase();
  return CODECS.includes(upper) ? upper : null;
}

/**
 * What the camera is sent as: {codec: 'VP9'|…|null, scalabilityMode: 'L3T3_KEY'|…|null, problems: [text]}.
 * The query string (`codec`, `svc`) wins over config.videoQuality (`preferredCodec`, `scalabilityMode`).
 * Unknown values are left out (and said in `problems`); a spatial mode with a codec that has no spatial
 * layers (or with none named) is too. Null codec and mode: VP8 simulcast, as without any option.
 */
export function videoOptions(config, search = '') {
  const params = new URLSearchParams(search);
  const quality = (config && typeof config.videoQuality === 'object' && config.videoQuality) || {};
  const problems = [];
  const rawCodec = params.get('codec') ?? quality.preferredCodec ?? null;
  const rawMode = params.get('svc') ?? quality.scalabilityMode ?? null;
  let codec = null;
  if (rawCodec !== null && rawCodec !== '') {
    codec = codecName(rawCodec);
    if (!codec) problems.push(`unknown codec ${JSON.stringify(String(rawCodec)).slice(0, 40)}`);
  }
  let mode = null;
  if (rawMode !== null && rawMode !== '') {
    const m = typeof rawMode === 'string' ? MODE_RE.exec(rawMode.trim().toUpperCase()) : null;
    if (!m) problems.push(`unknown SVC mode ${JSON.stringify(String(rawMode)).slice(0, 40)}`);
    else if (m[1] !== '1' && !SPATIAL.has(codec)) problems.push(`${m[0]} needs codec VP9 or AV1`);
    else mode = m[0];
  }
  if (!mode && SPATIAL.has(codec)) mode = 'L3T3_KEY';
  return { codec, scalabilityMode: mode, problems };
}

/**
 * `codecs` (an RTCRtpCodec list, as RTCRtpReceiver.getCapabilities gives it) with every entry of `codec`
 * first, the rest (other codecs, rtx, red, ulpfec) in their order: the answer keeps them all, so the m-line
 * still receives anything, but Chrome sends with the first.
 */
export function preferred(codecs, codec) {
  const mime = `video/${codec}`.toLowerCase();
  const first = codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  return first.length ? [...first, ...codecs.filter((c) => c.mimeType.toLowerCase() !== mime)] : null;
}

/**
 * Puts `codec` first in the transceiver's answer; false when the browser cannot. Chrome as the answerer still
 * sends with the offer's first codec (VP8), so `sendWith` names the codec in the encodings too.
 */
export function preferCodec(transceiver, codec) {
  const caps = globalThis.RTCRtpReceiver?.getCapabilities?.('video')?.codecs ?? [];
  const order = preferred(caps, codec);
  if (!order || typeof transceiver?.setCodecPreferences !== 'function') {
    console.warn(`codecs: cannot prefer ${codec} (supported: ${[...new Set(caps.map((c) => c.mimeType))].join(', ')})`);
    return false;
  }
  transceiver.setCodecPreferences(order);
  return true;
}

/**
 * The sender's encodings sent with `codec` (each one, RTCRtpEncodingParameters.codec, one of those the
 * answer negotiated) and, given a `scalabilityMode`, its one encoding as SVC in that mode at full size (the
 * answer had one SSRC: no simulcast). False when the browser refuses: the camera then still goes out, as
 * VP8 (in one layer when the answer was not made simulcast).
 */
export async function sendWith(sender, { codec = null, scalabilityMode = null }) {
  const params = sender.getParameters();
  const encodings = params.encodings ?? [];
  if (!encodings.length || (scalabilityMode && encodings.length !== 1)) {
    console.warn('codecs: cannot send', scalabilityMode, 'over', encodings.length, 'encodings');
    return false;
  }
  if (codec) {
    const mime = `video/${codec}`.toLowerCase();
    const negotiated = (params.codecs ?? []).find((c) => c.mimeType.toLowerCase() === mime);
    if (!negotiated) {
      console.warn(`codecs: ${codec} was not negotiated`);
      return false;
    }
    const { payloadType, ...rtcCodec } = negotiated;
    for (const e of encodings) e.codec = rtcCodec;
  }
  if (scalabilityMode) {
    Object.assign(encodings[0], { active: true, scalabilityMode, scaleResolutionDownBy: 1, maxBitrate: SVC_MAX_BITRATE });
  }
  try {
    await sender.setParameters(params);
  } catch (err) {
    console.warn(`codecs: cannot send ${codec ?? 'the default codec'} ${scalabilityMode ?? ''}:`, err.message);
    return false;
  }
  return true;
}

/** The mimeType ('video/VP9') of an RTP stats entry's codec in `report`, or null. */
export function codecOfStats(report, entry) {
  const codec = entry.codecId ? report.get(entry.codecId) : undefined;
  return codec?.mimeType ?? null;
}

/**
 * Whether our microphone is sent as RFC 2198 redundant Opus (RED), like Jitsi Meet's
 * `audioQuality.enableOpusRed`: `?red=1` (or `true`), else config.audioQuality.enableOpusRed. Only when the
 * focus offers red (its `enable-opus-red`); off by default.
 */
export function redOption(config, search = '') {
  const raw = new URLSearchParams(search).get('red');
  if (raw !== null) return ['1', 'true', 'yes', 'on'].includes(raw.trim().toLowerCase());
  const quality = (config && typeof config.audioQuality === 'object' && config.audioQuality) || {};
  return quality.enableOpusRed === true;
}

/**
 * The audio payload types of the focus's offer as this client takes them: with `red`, red first (Chrome as
 * the answerer sends with the offer's first codec, so it then sends RED around Opus); without, no red at all,
 * so that the answer tells the bridge to strip RED for us. Unchanged when the offer has no red.
 */
export function audioPayloadTypes(payloadTypes, red) {
  const isRed = (pt) => String(pt.name).toLowerCase() === 'red';
  if (!payloadTypes.some(isRed)) return payloadTypes;
  return red ? [...payloadTypes.filter(isRed), ...payloadTypes.filter((pt) => !isRed(pt))] : payloadTypes.filter((pt) => !isRed(pt));
}
