// Answer audio -> the speaker: a jitter buffer in the audio thread (as client/jitter.py).
//
// The page posts 24 kHz samples tagged with the assistant item they belong to
// ({type: "push", item, samples}), {type: "complete", item} once an item's audio has
// all arrived, and {type: "flush", id} on barge-in. Playback starts once
// `prebufferMs` are queued (or the item is complete); running dry before the item is
// complete is an underrun: counted, and playback waits for the prebuffer again.
// A flush drops everything queued at once and answers {type: "flushed", id, item,
// playedSamples}: how much of the item really went to the speaker, the number
// conversation.item.truncate needs (item null if nothing was left to cut).
// Samples are resampled from 24 kHz to the context's rate by linear interpolation.
// Every ~50 ms (and when an item starts playing) it posts {type: "stats", ...}.

const IN_RATE_HZ = 24000;
const STATS_EVERY_BLOCKS = 16;
const KEEP_ITEMS = 16;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.prebufferSamples = Math.round((opts.prebufferMs ?? 60) * IN_RATE_HZ / 1000);
    this.step = IN_RATE_HZ / sampleRate;  // input samples per output sample
    this.queue = [];  // [{item, samples: Float32Array, offset}]
    this.queuedSamples = 0;
    this.playing = false;
    this.current = null;  // the item last handed to the speaker
    this.items = new Map();  // item -> {received, played, firstPlayTime, complete}
    this.underruns = 0;
    this.a = 0; this.b = 0; this.t = 1;  // interpolation between input samples a and b
    this.blocks = 0;
    this.changed = false;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  item(id) {
    let item = this.items.get(id);
    if (!item) {
      item = { received: 0, played: 0, firstPlayTime: null, complete: false };
      this.items.set(id, item);
      while (this.items.size > KEEP_ITEMS) this.items.delete(this.items.keys().next().value);
    }
    return item;
  }

  onMessage(msg) {
    if (msg.type === "push") {
      this.queue.push({ item: msg.item, samples: msg.samples, offset: 0 });
      this.queuedSamples += msg.samples.length;
      this.item(msg.item).received += msg.samples.length;
    } else if (msg.type === "complete") {
      this.item(msg.item).complete = true;
    } else if (msg.type === "flush") {
      this.port.postMessage({ type: "flushed", id: msg.id, ...this.flush() });
      this.postStats();
    }
  }

  flush() {
    const current = this.queue.length ? this.queue[0].item : this.current;
    this.queue = [];
    this.queuedSamples = 0;
    this.playing = false;
    this.current = null;
    this.a = 0; this.b = 0;
    if (current === null) return { item: null, playedSamples: 0 };
    const item = this.item(current);
    if (item.complete && item.played >= item.received) return { item: null, playedSamples: 0 };
    return { item: current, playedSamples: item.played };
  }

  ready() {
    if (this.queuedSamples >= this.prebufferSamples) return true;
    return this.item(this.queue[this.queue.length - 1].item).complete;
  }

  // The next 24 kHz sample for the speaker (0 when nothing plays); `time` dates it.
  next(time) {
    if (!this.playing) {
      if (!this.queue.length || !this.ready()) return 0;
      this.playing = true;
    }
    if (!this.queue.length) {  // ran dry
      this.playing = false;
      if (this.current !== null && !this.item(this.current).complete) this.underruns += 1;
      this.changed = true;
      return 0;
    }
    const head = this.queue[0];
    const item = this.item(head.item);
    if (item.firstPlayTime === null) {
      item.firstPlayTime = time;
      this.changed = true;
    }
    this.current = head.item;
    const v = head.samples[head.offset++];
    item.played += 1;
    this.queuedSamples -= 1;
    if (head.offset >= head.samples.length) this.queue.shift();
    return v;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    for (let j = 0; j < out.length; j++) {
      while (this.t >= 1) {
        this.a = this.b;
        this.b = this.next(currentTime + j / sampleRate);
        this.t -= 1;
      }
      out[j] = this.a + (this.b - this.a) * this.t;
      this.t += this.step;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.blocks += 1;
    if (this.changed || this.blocks % STATS_EVERY_BLOCKS === 0) this.postStats();
    return true;
  }

  postStats() {
    this.changed = false;
    this.port.postMessage({
      type: "stats", time: currentTime, underruns: this.underruns,
      audible: this.playing || this.queuedSamples > 0,
      queuedMs: 1000 * this.queuedSamples / IN_RATE_HZ,
      items: Object.fromEntries(this.items),
    });
  }
}

registerProcessor("voxloop-playback", PlaybackProcessor);
