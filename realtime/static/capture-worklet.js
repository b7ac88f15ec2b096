// Microphone -> 24 kHz pcm16 blocks, in the audio thread.
//
// The AudioContext runs at the device's rate (44.1 or 48 kHz, whatever the browser
// picked); this worklet low-passes and resamples to 24 kHz and posts one block of
// `blockSamples` pcm16 samples (20 ms) at a time, with the context time of its first
// sample (so the page can date the end of the user's speech) and its level in dBFS
// (the meter). With no microphone connected (muted) it posts silence, so the server's
// voice activity detector still sees time pass and ends a turn.

const OUT_RATE_HZ = 24000;

// RBJ cookbook low-pass biquad (direct form I), one per cascade stage.
class Biquad {
  constructor(cutoffHz, rateHz, q) {
    const w = 2 * Math.PI * cutoffHz / rateHz;
    const alpha = Math.sin(w) / (2 * q);
    const cos = Math.cos(w);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0; this.b1 = (1 - cos) / a0; this.b2 = this.b0;
    this.a1 = -2 * cos / a0; this.a2 = (1 - alpha) / a0;
    this.x1 = 0; this.x2 = 0; this.y1 = 0; this.y2 = 0;
  }

  step(x) {
    const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1
      - this.a2 * this.y2;
    this.x2 = this.x1; this.x1 = x; this.y2 = this.y1; this.y1 = y;
    return y;
  }
}

// Streaming linear-interpolation resampler from `fromHz` to OUT_RATE_HZ, with a 4th-order
// Butterworth low-pass at 0.45 * 24 kHz in front when it decimates.
class Downsampler {
  constructor(fromHz) {
    this.step = fromHz / OUT_RATE_HZ;  // input samples per output sample
    this.t = 0;  // position of the next output sample; -1 is `prev`
    this.prev = 0;
    this.filters = fromHz > OUT_RATE_HZ
      ? [new Biquad(0.45 * OUT_RATE_HZ, fromHz, 0.5412), new Biquad(0.45 * OUT_RATE_HZ, fromHz, 1.3066)]
      : [];
  }

  // Resample one block `x` (Float32Array); push the output samples to `out` (an array).
  push(x, out) {
    const n = x.length;
    if (this.filters.length) {
      const y = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        let v = x[i];
        for (const f of this.filters) v = f.step(v);
        y[i] = v;
      }
      x = y;
    }
    while (this.t <= n - 1) {
      const i = Math.floor(this.t);
      const frac = this.t - i;
      const a = i < 0 ? this.prev : x[i];
      const b = i + 1 < n ? x[i + 1] : a;
      out.push(a + (b - a) * frac);
      this.t += this.step;
    }
    this.t -= n;
    this.prev = x[n - 1];
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.blockSamples = opts.blockSamples || 480;  // 20 ms at 24 kHz
    this.resampler = new Downsampler(sampleRate);
    this.pending = [];  // 24 kHz samples not yet posted
    this.pendingStart = null;  // context time of pending[0]
  }

  process(inputs) {
    const channels = inputs[0];
    const frames = 128;
    const mono = new Float32Array(channels.length ? channels[0].length : frames);
    for (const channel of channels) {  // mix down: a stereo mic is still one voice
      for (let i = 0; i < channel.length; i++) mono[i] += channel[i] / channels.length;
    }
    if (this.pendingStart === null) this.pendingStart = currentTime;
    this.resampler.push(mono, this.pending);
    while (this.pending.length >= this.blockSamples) {
      const block = this.pending.splice(0, this.blockSamples);
      this.post(block);
    }
    return true;
  }

  post(block) {
    const pcm = new Int16Array(block.length);
    let energy = 0;
    for (let i = 0; i < block.length; i++) {
      const v = block[i];
      energy += v * v;
      pcm[i] = Math.max(-32768, Math.min(32767, Math.round(v * 32768)));  // voxloop.audio's scale
    }
    const dbfs = 10 * Math.log10(energy / block.length + 1e-12);
    this.port.postMessage({ pcm, startTime: this.pendingStart, dbfs }, [pcm.buffer]);
    this.pendingStart += block.length / OUT_RATE_HZ;
  }
}

registerProcessor("voxloop-capture", CaptureProcessor);
