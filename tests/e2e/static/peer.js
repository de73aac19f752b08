"use strict";
// A test peer page driven from Python through Selenium's execute_async_script (see tests/helpers/chromium.py).
// Every method returns a promise; Python gets {ok: value} or {error: text}.

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Resolves when ICE gathering is complete (the bridge takes no trickled candidates from tests).
function gathered(pc, timeoutMs = 10000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("ICE gathering did not complete")), timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

// Keeps only UDP candidates on 127.0.0.0/8: test traffic stays on loopback.
function loopbackOnly(sdp) {
  return sdp
    .split("\r\n")
    .filter((line) => {
      if (!line.startsWith("a=candidate:")) return true;
      const bits = line.split(" ");
      return bits[2].toLowerCase() === "udp" && bits[4].startsWith("127.");
    })
    .join("\r\n");
}

async function rtpStats(pc, type) {
  const out = [];
  (await pc.getStats()).forEach((s) => {
    if (s.type !== type) return;
    out.push({
      kind: s.kind,
      ssrc: s.ssrc,
      mid: s.mid ?? null,
      packetsReceived: s.packetsReceived ?? 0,
      packetsSent: s.packetsSent ?? 0,
      framesDecoded: s.framesDecoded ?? 0,
      framesEncoded: s.framesEncoded ?? 0,
      frameWidth: s.frameWidth ?? 0,
      frameHeight: s.frameHeight ?? 0,
      totalSamplesReceived: s.totalSamplesReceived ?? 0,
      decoderImplementation: s.decoderImplementation ?? "",
      pliCount: s.pliCount ?? 0,
      firCount: s.firCount ?? 0,
      nackCount: s.nackCount ?? 0,
      retransmittedPacketsSent: s.retransmittedPacketsSent ?? 0,
    });
  });
  return out;
}

const sluice = {
  pc: null,
  local: null,
  figures: {},
  loop: null,

  status(text) {
    document.getElementById("status").textContent = text;
  },

  show(key, stream, caption) {
    let fig = this.figures[key];
    if (!fig) {
      fig = document.createElement("figure");
      const video = document.createElement("video");
      video.autoplay = true;
      video.muted = true;
      video.playsInline = true;
      fig.append(video, document.createElement("figcaption"));
      document.getElementById("videos").append(fig);
      this.figures[key] = fig;
    }
    if (stream) fig.querySelector("video").srcObject = stream;
    if (caption) fig.querySelector("figcaption").textContent = caption;
  },

  async media() {
    if (!this.local) {
      this.local = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: 320, height: 240, frameRate: 30 },
      });
      this.show("local", this.local, "local (fake camera)");
    }
    return this.local;
  },

  // Applies a bridge offer (first or re-offer) and returns the complete answer.
  async answer(offerSdp) {
    if (!this.pc) {
      this.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
      const stream = await this.media();
      // Added before the first offer: JSEP pairs them with the offer's sendrecv mid 0 / mid 1.
      for (const track of stream.getTracks()) this.pc.addTrack(track, stream);
      this.pc.ontrack = (e) => {
        if (e.track.kind !== "video") return;
        const mid = e.transceiver.mid;
        this.show("mid-" + mid, new MediaStream([e.track]), "mid " + mid);
      };
      this.pc.onconnectionstatechange = () => this.status("bridge: " + this.pc.connectionState);
    }
    await this.pc.setRemoteDescription({ type: "offer", sdp: offerSdp });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await gathered(this.pc);
    return this.pc.localDescription.sdp;
  },

  // {mid: participant} captions for the screenshot.
  async label(owners) {
    for (const [mid, who] of Object.entries(owners)) {
      if (this.figures["mid-" + mid]) this.show("mid-" + mid, null, "from " + who + " (mid " + mid + ")");
    }
    return true;
  },

  async connectionState() {
    return this.pc ? this.pc.connectionState : "none";
  },

  async inbound() {
    return this.pc ? rtpStats(this.pc, "inbound-rtp") : [];
  },

  async outbound() {
    return this.pc ? rtpStats(this.pc, "outbound-rtp") : [];
  },

  async close() {
    if (this.pc) this.pc.close();
    this.pc = null;
    return true;
  },

  // Self-check without the bridge: two local peer connections, fake camera through VP8 and back.
  async loopback(seconds) {
    const stream = await this.media();
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    this.loop = { a, b };
    for (const track of stream.getTracks()) a.addTrack(track, stream);
    b.ontrack = (e) => {
      if (e.track.kind === "video") this.show("loopback", new MediaStream([e.track]), "loopback (decoded)");
    };
    await a.setLocalDescription(await a.createOffer());
    await gathered(a);
    await b.setRemoteDescription({ type: "offer", sdp: loopbackOnly(a.localDescription.sdp) });
    await b.setLocalDescription(await b.createAnswer());
    await gathered(b);
    await a.setRemoteDescription({ type: "answer", sdp: loopbackOnly(b.localDescription.sdp) });
    const deadline = performance.now() + seconds * 1000;
    let inbound = [];
    while (performance.now() < deadline) {
      inbound = await rtpStats(b, "inbound-rtp");
      const video = inbound.find((s) => s.kind === "video");
      if (video && video.framesDecoded > 30) break;
      await sleep(200);
    }
    this.status("loopback: " + b.connectionState);
    const pair = [];
    (await b.getStats()).forEach((s) => {
      if (s.type === "candidate-pair" && s.state === "succeeded") pair.push(s.id);
    });
    return { connectionState: b.connectionState, inbound, succeededPairs: pair.length };
  },

  async closeLoopback() {
    if (this.loop) {
      this.loop.a.close();
      this.loop.b.close();
      this.loop = null;
    }
    return true;
  },
};
window.sluice = sluice;
document.getElementById("status").textContent = "ready";
