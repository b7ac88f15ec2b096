// voxloop's browser client: the Talk button, the key form, and the wiring between the
// microphone, the websocket, the conversation and the view.
//
// `?autostart=1` starts listening on load (kiosks, tests). `window.voxloop.snapshot()`
// returns what the page shows, as plain data.

import { AudioError, AudioIO } from "./audio.js";
import { Connection, serverInfo } from "./connection.js";
import { Conversation } from "./conversation.js";
import { render } from "./view.js";

const KEY_STORE = "voxloop-api-key";
const SESSION_UPDATE = { type: "session.update", session: { type: "realtime", audio: {
  input: { transcription: { model: "whisper-1" } } } } };
const SERVER_ERROR_SHOWN_MS = 8000;
const SILENT_DBFS = -120;

const app = {
  info: null, key: sessionStorage.getItem(KEY_STORE) || "", running: false, starting: false,
  askKey: false, muteWanted: false, audio: null, connection: null, conversation: null,
  stats: null,
  levelDbfs: SILENT_DBFS, connectionText: "not connected", message: null, log: [],
  turnDetection: undefined,
};

function note(line) {
  app.log.push(`[${(performance.now() / 1000).toFixed(2)}s] ${line}`);
  if (app.log.length > 200) app.log.shift();
}

function showMessage(text, { note: isNote = false, forMs = 0 } = {}) {
  const message = { text, note: isNote };
  app.message = message;
  note(text);
  if (forMs) setTimeout(() => { if (app.message === message) app.message = null; }, forMs);
}

function state() {
  if (!app.running) return app.message && !app.message.note ? "failed" : "offline";
  if (app.starting || !app.connection) return "connecting";
  if (!app.connection.open) return app.connection.everOpened ? "reconnecting" : "connecting";
  const c = app.conversation;
  if (app.stats && app.stats.audible) return "speaking";
  if (c.userSpeaking) return "user-speaking";
  if (c.responding) return "thinking";
  return app.audio.muted ? "muted" : "listening";
}

function viewState() {
  const c = app.conversation;
  return {
    state: state(), running: app.running, starting: app.starting,
    muted: Boolean(app.audio && app.audio.muted), levelDbfs: app.levelDbfs,
    connection: app.connectionText, engine: app.info ? app.info.engine : null,
    turnDetection: c ? c.turnDetection : app.turnDetection,
    underruns: app.stats ? app.stats.underruns : 0, bargeIns: c ? c.bargeIns : 0,
    reconnects: app.connection ? app.connection.reconnects : 0,
    message: app.message, askKey: app.askKey, turns: c ? c.turns : [],
  };
}

function base64(int16) {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function onMicBlock({ pcm, startTime, dbfs }) {
  app.levelDbfs = app.audio.muted ? SILENT_DBFS : dbfs;
  if (!app.connection || !app.connection.open) return;  // captured while offline: stale
  app.conversation.clock.sent(pcm.length, startTime);
  app.connection.send({ type: "input_audio_buffer.append", audio: base64(pcm) });
}

function onServerEvent(event) {
  if (event.type === "error") {
    const error = event.error || {};
    showMessage(`Server error (${error.code}): ${error.message}`,
      { note: true, forMs: SERVER_ERROR_SHOWN_MS });
  }
  app.conversation.onEvent(event);
}

function onStatus(status) {
  app.connectionText = status.text;
  note(status.text);
  if (status.state === "connected" && app.message && !app.message.note) app.message = null;
  if (status.fatal) {
    stop();
    app.askKey = Boolean(status.keyRefused);
    showMessage(status.text);
  }
}

async function start() {
  if (app.running) return;
  app.running = true;
  app.starting = true;
  app.muteWanted = false;
  app.message = null;
  app.stats = null;
  const audio = new AudioIO({
    onBlock: onMicBlock,
    onStats: (stats) => {
      app.stats = stats;
      if (app.conversation) app.conversation.onPlaybackStats(stats);
    },
    onDeviceError: (text) => { stop(); showMessage(text); },
  });
  app.audio = audio;
  try {
    await audio.start();
  } catch (err) {
    await audio.stop();
    app.running = false;
    app.starting = false;
    showMessage(err instanceof AudioError ? err.message : `Audio failed to start: ${err}`);
    return;
  }
  const connection = new Connection({
    key: app.key,
    onOpen: () => {
      app.conversation.resetConnection();
      connection.send(SESSION_UPDATE);
      openMicOnce(audio);
    },
    onEvent: onServerEvent,
    onStatus,
  });
  app.connection = connection;
  app.conversation = new Conversation({ player: audio, send: (e) => connection.send(e), note });
  app.starting = false;
  connection.start();
}

// The microphone opens once the server is there, so nothing said is lost to the connecting
// (what is captured while the connection is down is stale and is not sent).
async function openMicOnce(audio) {
  if (!audio.muted || app.muteWanted || audio.opening) return;
  audio.opening = true;
  try {
    await audio.openMic();
  } catch (err) {
    if (app.audio !== audio || !app.running) return;  // stopped since: not the current one's
    stop();
    showMessage(err.message);
  } finally {
    audio.opening = false;
  }
}

function stop() {
  if (!app.running) return;
  app.running = false;
  app.starting = false;
  if (app.connection) app.connection.stop();
  app.connectionText = "not connected";
  if (app.conversation) app.turnDetection = app.conversation.turnDetection;
  if (app.audio) app.audio.stop();
  app.levelDbfs = SILENT_DBFS;
  app.stats = null;
}

async function toggleMute() {
  if (!app.running || !app.audio || app.audio.opening) return;
  app.muteWanted = !app.audio.muted;
  if (app.muteWanted) app.audio.closeMic();
  else await openMicOnce(app.audio);
}

async function useKey(event) {
  event.preventDefault();
  app.key = document.getElementById("key").value.trim();
  sessionStorage.setItem(KEY_STORE, app.key);
  app.info = await serverInfo(app.key);
  if (app.info && app.info.api_key_accepted === false) {
    showMessage("The server refused that key: check it and try again.");
    return;
  }
  app.askKey = false;
  app.message = null;
  start();
}

async function init() {
  document.getElementById("talk").addEventListener("click", () => (app.running ? stop() : start()));
  document.getElementById("mute").addEventListener("click", toggleMute);
  document.getElementById("key-form").addEventListener("submit", useKey);
  setInterval(() => render(viewState()), 100);
  app.info = await serverInfo(app.key);
  if (app.info === null) {
    showMessage("The voxloop server is not answering: is `voxloop serve` still running? " +
      "Reload the page once it is.");
    return;
  }
  if (app.info.api_key_required && !app.info.api_key_accepted) {
    app.askKey = true;
    if (app.key) showMessage("The server refused the saved API key: enter the right one.");
    return;
  }
  if (new URLSearchParams(window.location.search).get("autostart") === "1") start();
}

window.voxloop = {
  snapshot: () => JSON.parse(JSON.stringify({ ...viewState(), log: app.log,
    stats: app.stats })),
};

init();
