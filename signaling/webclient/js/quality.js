// Connection quality, per participant, from getStats (conference.js qualityReport) sampled every few
// seconds: bitrate, loss, round-trip time, resolution and frame rate over the last interval, and a level
// (good, fair, poor). Each page also tells the others its own uplink over the bridge channel as Jitsi
// clients do (EndpointStats: bitrate, packetLoss, connectionQuality, jvbRTT), shown as "their connection".
// Pure: no DOM, no timers.

export const LEVELS = Object.freeze(['good', 'fair', 'poor', 'unknown']);
// Thresholds: loss and RTT as people notice them (a few % of loss and a quarter second of delay hurt).
export const FAIR = Object.freeze({ lossPct: 2, rttMs: 250, fps: 12 });
export const POOR = Object.freeze({ lossPct: 10, rttMs: 500, fps: 4 });

const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : null);

/** The level of one measurement; 'unknown' when nothing was measured. `expectVideo`: judge the frame rate. */
export function qualityLevel({ lossPct = null, rttMs = null, fps = null, expectVideo = false }) {
  const known = [lossPct, rttMs, expectVideo ? fps : null].some((x) => x !== null);
  if (!known) return 'unknown';
  if ((lossPct ?? 0) >= POOR.lossPct || (rttMs ?? 0) >= POOR.rttMs || (expectVideo && fps !== null && fps < POOR.fps)) return 'poor';
  if ((lossPct ?? 0) >= FAIR.lossPct || (rttMs ?? 0) >= FAIR.rttMs || (expectVideo && fps !== null && fps < FAIR.fps)) return 'fair';
  return 'good';
}

/**
 * One remote participant's reception over an interval, from two cumulative snapshots (conference.stats()
 * entries) `ms` apart: {bitrateKbps, lossPct, fps, width, height}. A counter that went back (a new
 * session) gives nulls for that interval.
 */
export function interval(prev, cur, ms) {
  if (!cur) return { bitrateKbps: null, lossPct: null, fps: null, width: 0, height: 0 };
  const d = (k) => (prev && num(cur[k]) !== null && num(prev[k]) !== null && cur[k] >= prev[k] ? cur[k] - prev[k] : null);
  const bytes = d('videoBytesReceived') !== null && d('audioBytesReceived') !== null ? d('videoBytesReceived') + d('audioBytesReceived') : null;
  const got = d('videoPacketsReceived');
  const lost = d('videoPacketsLost');
  const frames = d('framesDecoded');
  const secs = ms > 0 ? ms / 1000 : null;
  return {
    bitrateKbps: bytes !== null && secs ? Math.round((bytes * 8) / 1000 / secs) : null,
    lossPct: got !== null && lost !== null && got + lost > 0 ? Math.round((1000 * lost) / (got + lost)) / 10 : null,
    fps: frames !== null && secs ? Math.round((10 * frames) / secs) / 10 : null,
    width: cur.frameWidth ?? 0,
    height: cur.frameHeight ?? 0,
  };
}

const MAX_REPORTED_KBPS = 1e7;

/**
 * What another page says of its own connection (an EndpointStats message relayed by the bridge, with its
 * sender in "from"), bounded and typed, or null when it is not usable.
 */
export function parseEndpointStats(msg) {
  if (!msg || typeof msg !== 'object' || typeof msg.from !== 'string' || !msg.from || msg.from.length > 64) return null;
  const bounded = (x, max) => (num(x) !== null && x >= 0 && x <= max ? x : null);
  const br = msg.bitrate && typeof msg.bitrate === 'object' ? msg.bitrate : {};
  const pl = msg.packetLoss && typeof msg.packetLoss === 'object' ? msg.packetLoss : {};
  return {
    from: msg.from,
    uploadKbps: bounded(br.upload, MAX_REPORTED_KBPS),
    downloadKbps: bounded(br.download, MAX_REPORTED_KBPS),
    uploadLossPct: bounded(pl.upload, 100),
    connectionQuality: bounded(msg.connectionQuality, 100),
    rttMs: bounded(msg.jvbRTT, 60000),
  };
}

/** A 0-100 score of our own connection for EndpointStats' connectionQuality (100: nothing wrong seen). */
export function connectionScore(level) {
  return { good: 100, fair: 60, poor: 20 }[level] ?? 100;
}

/**
 * Keeps the last snapshot and turns each new qualityReport into per-participant figures:
 * {local: {uploadKbps, downloadKbps, uploadLossPct, rttMs, level}, remote: {id: {...interval, rttMs, level,
 * reported}}}. `reported` is the latest EndpointStats each sender gave (setReported).
 */
export class QualityMonitor {
  constructor() {
    this.prev = null;
    this.reported = new Map();
    this.last = { local: null, remote: {} };
  }

  setReported(stats) {
    if (stats) this.reported.set(stats.from, { ...stats, at: Date.now() });
  }

  update(report, videoOf = () => true) {
    const prev = this.prev;
    const ms = prev ? report.at - prev.at : 0;
    const rttMs = num(report.rttMs);
    const remote = {};
    for (const [id, cur] of Object.entries(report.participants ?? {})) {
      const iv = interval(prev?.participants?.[id], cur, ms);
      remote[id] = {
        ...iv,
        rttMs,
        level: prev ? qualityLevel({ lossPct: iv.lossPct, rttMs, fps: iv.fps, expectVideo: videoOf(id) }) : 'unknown',
        reported: this.reported.get(id) ?? null,
      };
    }
    const rate = (k) => (prev && ms > 0 && report[k] >= prev[k] ? Math.round(((report[k] - prev[k]) * 8) / ms) : null);
    const upLoss = num(report.uploadLossFraction) !== null ? Math.round(report.uploadLossFraction * 1000) / 10 : null;
    const local = {
      uploadKbps: rate('bytesSent'),
      downloadKbps: rate('bytesReceived'),
      uploadLossPct: upLoss,
      rttMs,
      level: prev ? qualityLevel({ lossPct: upLoss, rttMs }) : 'unknown',
    };
    this.prev = report;
    this.last = { local, remote };
    return this.last;
  }
}
