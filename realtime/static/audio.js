// The page's audio: one AudioContext, the microphone through the capture worklet, the
// answer through the playback worklet. Errors become AudioError with a message a
// person can act on.

const CAPTURE_BLOCK_SAMPLES = 480;  // 20 ms at 24 kHz per input_audio_buffer.append
const PREBUFFER_MS = 60;

export class AudioError extends Error {}

// getUserMedia's failures, in words.
export function micErrorMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this page in the " +
        "browser's site settings, then press Talk.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in (or pick one in the browser's settings), " +
        "then press Talk.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone is busy or failed to start: another program may be using it. " +
        "Close it, then press Talk.";
    default:
      return `The microphone could not be opened: ${err && err.message ? err.message : err}`;
  }
}

export class AudioIO {
  // onBlock({pcm: Int16Array, startTime, dbfs}), onStats(stats) from the worklets.
  constructor({ onBlock, onStats, onDeviceError }) {
    this.onBlock = onBlock;
    this.onStats = onStats;
    this.onDeviceError = onDeviceError;
    this.ctx = null;
    this.stream = null;
    this.source = null;
    this.capture = null;
    this.playback = null;
    this.opening = false;  // a getUserMedia in flight
    this.flushes = new Map();  // flush id -> resolve
    this.nextFlushId = 1;
  }

  get time() {
    return this.ctx ? this.ctx.currentTime : 0;
  }

  // Create the context and both worklets; the microphone opens with openMic().
  async start() {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      throw new AudioError("The microphone needs a secure page: open this page as " +
        "http://127.0.0.1:PORT/ or http://localhost:PORT/ on the server's machine, or " +
        "through https (see the README's TLS reverse proxy notes).");
    }
    if (typeof AudioWorkletNode === "undefined") {
      throw new AudioError("This browser has no AudioWorklet: use a current Chrome, " +
        "Edge, Firefox or Safari.");
    }
    try {
      this.ctx = new AudioContext({ latencyHint: "interactive" });
    } catch (err) {
      throw new AudioError(`The audio device could not be opened (busy or missing?): ${err.message}`);
    }
    this.ctx.onerror = () => this.onDeviceError(
      "The audio output device failed or is busy: check the speaker, then press Talk.");
    await this.ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
    await this.ctx.audioWorklet.addModule(new URL("playback-worklet.js", import.meta.url));
    this.capture = new AudioWorkletNode(this.ctx, "voxloop-capture", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { blockSamples: CAPTURE_BLOCK_SAMPLES },
    });
    this.capture.port.onmessage = (e) => this.onBlock(e.data);
    this.capture.connect(this.ctx.destination);  // silent; keeps the node pulled
    this.playback = new AudioWorkletNode(this.ctx, "voxloop-playback", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { prebufferMs: PREBUFFER_MS },
    });
    this.playback.port.onmessage = (e) => this.onPlayback(e.data);
    this.playback.connect(this.ctx.destination);
    await this.ctx.resume();
    if (this.ctx.state !== "running") {
      throw new AudioError("The browser did not let the page play sound: click Talk to start.");
    }
  }

  async openMic() {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: {
        echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1,
      } });
    } catch (err) {
      throw new AudioError(micErrorMessage(err));
    }
    if (!this.ctx) {  // stopped while the browser asked: release the microphone at once
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.stream = stream;
    this.source = this.ctx.createMediaStreamSource(stream);
    this.source.connect(this.capture);
    for (const track of stream.getAudioTracks()) {
      track.onended = () => this.onDeviceError(
        "The microphone stopped (unplugged or taken by another program): press Talk again.");
    }
  }

  // Mute releases the microphone (the capture worklet then sends silence); unmute opens
  // it again.
  closeMic() {
    if (this.source) this.source.disconnect();
    if (this.stream) {
      for (const track of this.stream.getTracks()) {
        track.onended = null;
        track.stop();
      }
    }
    this.source = null;
    this.stream = null;
  }

  get muted() {
    return this.stream === null;
  }

  // Seconds between a sample leaving the playback worklet and the speaker, and between the
  // microphone and the capture worklet: the worklets' clocks see neither.
  get outputLatencyS() {
    return this.ctx ? (this.ctx.outputLatency || this.ctx.baseLatency || 0) : 0;
  }

  get inputLatencyS() {
    const track = this.stream && this.stream.getAudioTracks()[0];
    const settings = track && track.getSettings ? track.getSettings() : {};
    return typeof settings.latency === "number" ? settings.latency : 0;
  }

  play(item, samples) {
    this.playback.port.postMessage({ type: "push", item, samples }, [samples.buffer]);
  }

  complete(item) {
    this.playback.port.postMessage({ type: "complete", item });
  }

  // Drop all queued answer audio now; resolves to {item, playedSamples}.
  flush() {
    const id = this.nextFlushId++;
    return new Promise((resolve) => {
      this.flushes.set(id, resolve);
      this.playback.port.postMessage({ type: "flush", id });
    });
  }

  onPlayback(msg) {
    if (msg.type === "flushed") {
      const resolve = this.flushes.get(msg.id);
      this.flushes.delete(msg.id);
      if (resolve) resolve(msg);
    } else if (msg.type === "stats") {
      this.onStats(msg);
    }
  }

  async stop() {
    this.closeMic();
    for (const resolve of this.flushes.values()) resolve({ item: null, playedSamples: 0 });
    this.flushes.clear();
    if (this.ctx) await this.ctx.close().catch(() => {});
    this.ctx = null;
    this.capture = null;
    this.playback = null;
  }
}
