// What the page knows about the conversation, driven by server events (the browser's
// twin of client/conversation.py).
//
// `onEvent(event)` updates the turns and hands answer audio to the player; on
// input_audio_buffer.speech_started it flushes playback at once and sends
// conversation.item.truncate with the milliseconds really played. Latency of a turn
// is what the user hears: from the end of their speech (speech_stopped.audio_end_ms
// minus the server's silence window, dated through the InputClock; under semantic_vad the
// end of the turn) to the first answer sample played (dated by the playback worklet), both
// on the AudioContext's clock.

const WIRE_RATE_HZ = 24000;

// Maps the server's input-audio milliseconds to when that audio was captured.
export class InputClock {
  constructor() {
    this.starts = [];  // first sample of each block sent
    this.times = [];  // its capture time (AudioContext seconds)
    this.sentSamples = 0;
  }

  sent(nSamples, startTime) {
    this.starts.push(this.sentSamples);
    this.times.push(startTime);
    this.sentSamples += nSamples;
    if (this.starts.length > 6000) {  // two minutes of 20 ms blocks
      this.starts.splice(0, 3000);
      this.times.splice(0, 3000);
    }
  }

  timeAt(audioMs) {
    const sample = Math.floor(audioMs * WIRE_RATE_HZ / 1000);
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {  // last block starting at or before `sample`
      const mid = (lo + hi) >> 1;
      if (this.starts[mid] <= sample) lo = mid + 1; else hi = mid;
    }
    if (lo === 0) return null;
    return this.times[lo - 1] + (sample - this.starts[lo - 1]) / WIRE_RATE_HZ;
  }
}

function decodePcm16(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const out = new Float32Array(bytes.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

export class Conversation {
  // player: {play(item, samples), complete(item), flush() -> Promise<{item, playedSamples}>}
  // send(event): to the server; note(line): the log.
  constructor({ player, send, note }) {
    this.player = player;
    this.send = send;
    this.note = note;
    this.clock = new InputClock();
    this.turns = [];
    this.userSpeaking = false;
    this.responding = false;
    this.bargeIns = 0;
    this.silenceMs = 500;
    this.turnDetection = null;
    this.dropped = new Set();  // assistant items the user talked over
    this.pushed = new Set();  // assistant items with audio handed to the player
    this.firstPlay = new Map();  // item -> context time of its first sample played
  }

  // A new websocket: the server's input clock starts again at zero.
  resetConnection() {
    this.clock = new InputClock();
    this.userSpeaking = false;
    this.responding = false;
    this.pushed.forEach((item) => this.dropped.add(item));
    this.player.flush();
  }

  // Called with each playback stats message: dates the answers that started playing.
  onPlaybackStats(stats) {
    for (const [item, s] of Object.entries(stats.items)) {
      if (s.firstPlayTime !== null && !this.firstPlay.has(item)) {
        this.firstPlay.set(item, s.firstPlayTime);
        const turn = this.turns.find((t) => t.answerItemId === item);
        if (turn && turn.speechEndTime !== null) {  // heard, from when it was said
          const heard = s.firstPlayTime + (this.player.outputLatencyS || 0);
          const said = turn.speechEndTime - (this.player.inputLatencyS || 0);
          turn.latencyMs = Math.round(1000 * (heard - said));
        }
      }
      const turn = this.turns.find((t) => t.answerItemId === item);
      if (turn) turn.playedMs = Math.round(1000 * s.played / WIRE_RATE_HZ);
    }
  }

  onEvent(event) {
    const handler = HANDLERS[event.type];
    if (handler) handler.call(this, event);
  }

  newTurn(fields) {
    const turn = { user: "", userDone: false, assistant: "", userItemId: null, responseId: null,
      answerItemId: null, status: "", speechEndTime: null, latencyMs: null, playedMs: 0,
      cutMs: null, serverCutMs: null, ...fields };
    this.turns.push(turn);
    if (this.turns.length > 50) this.turns.shift();
    return turn;
  }

  turnOfUserItem(itemId) {
    return this.turns.find((t) => t.userItemId === itemId) || null;
  }

  turnOfResponse(responseId) {
    return this.turns.find((t) => t.responseId === responseId) || null;
  }

  async bargeIn() {
    this.pushed.forEach((item) => this.dropped.add(item));  // audio still on its way: drop it
    const { item, playedSamples } = await this.player.flush();
    if (item === null) return;
    this.bargeIns += 1;
    const playedMs = Math.floor(1000 * playedSamples / WIRE_RATE_HZ);
    const turn = this.turns.find((t) => t.answerItemId === item);
    if (turn) turn.cutMs = playedMs;
    this.note(`you interrupted: answer cut at ${playedMs} ms`);
    this.send({ type: "conversation.item.truncate", item_id: item, content_index: 0,
      audio_end_ms: playedMs });
  }
}

const HANDLERS = {
  "session.created"(event) {
    const session = event.session || {};
    const input = (session.audio && session.audio.input) || {};
    const td = "turn_detection" in input ? input.turn_detection : session.turn_detection;
    this.turnDetection = td || null;
    // semantic_vad stamps the turn's end after a wait the page is not told: its turns are
    // timed from that end (~0-100 ms after a finished question go uncounted)
    if (td && td.type === "semantic_vad") this.silenceMs = 0;
    else if (td && td.silence_duration_ms !== undefined) this.silenceMs = td.silence_duration_ms;
  },

  "input_audio_buffer.speech_started"() {
    this.userSpeaking = true;
    this.bargeIn();
  },

  "input_audio_buffer.speech_stopped"(event) {
    this.userSpeaking = false;
    const endMs = Math.max(0, (event.audio_end_ms || 0) - this.silenceMs);
    this.newTurn({ userItemId: event.item_id || null, speechEndTime: this.clock.timeAt(endMs) });
  },

  "input_audio_buffer.committed"(event) {
    if (!this.turnOfUserItem(event.item_id)) this.newTurn({ userItemId: event.item_id });
  },

  "conversation.item.deleted"(event) {
    // semantic_vad: speech went on with a turn it had ended; the whole turn comes next
    const index = this.turns.findIndex((t) => t.userItemId === event.item_id);
    if (index >= 0) this.turns.splice(index, 1);
  },

  "conversation.item.input_audio_transcription.delta"(event) {
    const turn = this.turnOfUserItem(event.item_id);
    if (turn) turn.user += event.delta || "";
  },

  "conversation.item.input_audio_transcription.completed"(event) {
    const turn = this.turnOfUserItem(event.item_id);
    if (turn) {
      turn.user = (event.transcript || "").trim();
      turn.userDone = true;
    }
    this.note(`you: ${(event.transcript || "").trim()}`);
  },

  "conversation.item.input_audio_transcription.failed"(event) {
    const turn = this.turnOfUserItem(event.item_id);
    if (turn) {
      turn.user = "(not transcribed)";
      turn.userDone = true;
    }
  },

  "response.created"(event) {
    this.responding = true;
    const turn = [...this.turns].reverse().find((t) => t.responseId === null && !t.status);
    (turn || this.newTurn({})).responseId = event.response.id;
  },

  "response.output_item.added"(event) {
    const turn = this.turnOfResponse(event.response_id);
    if (turn && event.item && event.item.role === "assistant") turn.answerItemId = event.item.id;
  },

  "response.output_audio.delta"(event) {
    if (this.dropped.has(event.item_id)) return;  // in flight when the user interrupted
    const turn = this.turnOfResponse(event.response_id);
    if (turn && !turn.answerItemId) turn.answerItemId = event.item_id;
    this.pushed.add(event.item_id);
    this.player.play(event.item_id, decodePcm16(event.delta));
  },

  "response.output_audio_transcript.delta"(event) {
    if (this.dropped.has(event.item_id)) return;
    const turn = this.turnOfResponse(event.response_id);
    if (turn) turn.assistant += event.delta || "";
  },

  "response.output_audio_transcript.done"(event) {
    if (this.dropped.has(event.item_id)) return;
    const turn = this.turnOfResponse(event.response_id);
    if (turn) turn.assistant = event.transcript || turn.assistant;
  },

  "response.output_audio.done"(event) {
    if (event.item_id) this.player.complete(event.item_id);
  },

  "response.done"(event) {
    this.responding = false;
    const response = event.response || {};
    for (const item of response.output || []) if (item.id) this.player.complete(item.id);
    const turn = this.turnOfResponse(response.id);
    if (turn) turn.status = response.status || "";
    this.note(`answer ${response.status}: ${turn ? turn.assistant : ""}`);
  },

  "conversation.item.truncated"(event) {
    const turn = this.turns.find((t) => t.answerItemId === event.item_id);
    if (turn) turn.serverCutMs = event.audio_end_ms;
  },
};
HANDLERS["session.updated"] = HANDLERS["session.created"];
