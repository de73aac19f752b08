// Device choice: camera, microphone and speaker, remembered in localStorage, and the getUserMedia
// constraints that follow from them. Pure apart from enumerateDevices/getUserMedia in the two async helpers.

export const DEVICES_KEY = 'sluice.devices';
const MAX_ID_CHARS = 256;

/** The saved choice {camera, microphone, speaker} (device ids or null); anything malformed reads as none. */
export function loadPrefs(storage = globalThis.localStorage) {
  let doc = null;
  try {
    doc = JSON.parse(storage?.getItem(DEVICES_KEY) ?? 'null');
  } catch {
    doc = null;
  }
  const id = (x) => (typeof x === 'string' && x && x.length <= MAX_ID_CHARS ? x : null);
  return { camera: id(doc?.camera), microphone: id(doc?.microphone), speaker: id(doc?.speaker) };
}

export function savePrefs(prefs, storage = globalThis.localStorage) {
  const { camera = null, microphone = null, speaker = null } = prefs;
  storage?.setItem(DEVICES_KEY, JSON.stringify({ camera, microphone, speaker }));
}

/** The camera's size we ask for (the simulcast layers are fractions of it). */
export const CAMERA_SIZE = Object.freeze({ width: { ideal: 1280 }, height: { ideal: 720 } });

/** getUserMedia constraints for one kind, on the chosen device if any (`ideal`, so a gone device falls back). */
export function trackConstraints(kind, deviceId) {
  if (kind === 'video') return deviceId ? { ...CAMERA_SIZE, deviceId: { exact: deviceId } } : { ...CAMERA_SIZE };
  return deviceId ? { deviceId: { exact: deviceId } } : true;
}

export function mediaConstraints(prefs) {
  return { audio: trackConstraints('audio', prefs.microphone), video: trackConstraints('video', prefs.camera) };
}

/** Devices by kind: {cameras, microphones, speakers}: [{deviceId, label}]; labels made up when hidden. */
export function groupDevices(list) {
  const out = { cameras: [], microphones: [], speakers: [] };
  const key = { videoinput: 'cameras', audioinput: 'microphones', audiooutput: 'speakers' };
  for (const d of list) {
    const k = key[d.kind];
    if (!k || !d.deviceId || out[k].some((x) => x.deviceId === d.deviceId)) continue;
    out[k].push({ deviceId: d.deviceId, label: d.label || `${k.slice(0, -1)} ${out[k].length + 1}` });
  }
  return out;
}

export async function listDevices() {
  return groupDevices(await navigator.mediaDevices.enumerateDevices());
}

/**
 * A new track of `kind` on `deviceId`. With the device we already use (or no id), other constraints
 * (a new size) still give a new track: where there is one camera only, that is what "switching" can do.
 */
export async function openTrack(kind, deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia({ [kind]: trackConstraints(kind, deviceId) });
  return stream.getTracks()[0];
}
