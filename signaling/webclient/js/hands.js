// Raise hand, as Jitsi clients signal it: <jitsi_participant_raisedHand> in MUC presence carrying the time
// it was raised (ms since the epoch); lowered, the element is gone or empty. Pure.

export const RAISED_HAND = 'jitsi_participant_raisedHand';
// What a moderator sends (an EndpointMessage's payload name) to lower someone's hand, as Jitsi Meet.
export const LOWER_HAND_MESSAGE = 'lower-hand-message';
// Timestamps outside this range are not times a hand was raised (year 2000 .. 2286).
const MIN_TS = 946684800000;
const MAX_TS = 9999999999999;

/**
 * When the presence's sender raised their hand (ms), or null when it is down. A raised hand without a
 * usable time (an older client's "true") counts as raised at `now`.
 */
export function raisedHandOf(st, now = Date.now()) {
  const el = [...st.children].find((c) => c.localName === RAISED_HAND);
  if (!el) return null;
  const text = (el.textContent ?? '').trim();
  if (!text || text === 'false') return null;
  if (/^\d{1,13}$/.test(text)) {
    const ts = Number(text);
    if (ts >= MIN_TS && ts <= MAX_TS) return ts;
  }
  return now;
}

/** The ids of those with a hand up, first raised first (ties by id, so every page shows the same order). */
export function handQueue(people) {
  return people
    .filter((p) => typeof p.raisedHand === 'number')
    .sort((a, b) => a.raisedHand - b.raisedHand || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((p) => p.id);
}
