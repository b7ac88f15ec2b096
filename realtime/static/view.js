// Drawing the page from the app's state: nothing here changes state.

const $ = (id) => document.getElementById(id);

const STATE_LABELS = {
  offline: "offline", connecting: "connecting…", reconnecting: "reconnecting…",
  listening: "listening", muted: "muted", "user-speaking": "you're speaking",
  thinking: "thinking", speaking: "speaking", failed: "failed",
};

const ENGINE_LABELS = {
  hybrid: "hybrid: the student answers speech, the teachers typed text",
  native: "native: the distilled audio-native student",
  cascade: "cascade: ASR → LLM → TTS teachers",
};

const TD_NAMES = { threshold: "threshold", silence_duration_ms: "silence", prefix_padding_ms:
  "prefix" };

export function engineLabel(engine) {
  return ENGINE_LABELS[engine] || engine || "?";
}

export function turnDetectionLabel(td) {
  if (td === undefined) return "?";
  if (td === null) return "off: turns end when the client commits";
  const parts = [td.type || "?"];
  for (const [key, value] of Object.entries(td)) {
    if (key === "type" || (typeof value !== "number" && typeof value !== "string")) continue;
    const unit = key.endsWith("_ms") ? " ms" : "";
    parts.push(`${TD_NAMES[key] || key.replace(/_ms$/, "").replaceAll("_", " ")} ${value}${unit}`);
  }
  return parts.join(" · ");
}

export function levelWidth(dbfs) {
  return `${Math.max(0, Math.min(100, (dbfs + 60) / 60 * 100)).toFixed(0)}%`;
}

function turnMeta(turn) {
  const parts = [];
  if (turn.latencyMs !== null) parts.push(`latency ${turn.latencyMs} ms`);
  if (turn.playedMs) parts.push(`played ${(turn.playedMs / 1000).toFixed(1)} s`);
  if (turn.status) parts.push(turn.status);
  return parts.join(" · ");
}

function line(cls, who, text, pendingText) {
  const p = document.createElement("p");
  p.className = cls;
  const name = document.createElement("span");
  name.className = "who";
  name.textContent = who;
  p.append(name);
  const body = document.createElement("span");
  body.className = `text${text ? "" : " pending"}`;
  body.textContent = text || pendingText;
  p.append(body);
  return p;
}

function turnItem(turn) {
  const li = document.createElement("li");
  li.className = "turn";
  li.dataset.status = turn.status || "open";
  li.append(line("user", "You:", turn.user, turn.userDone ? "(no words heard)" : "…"));
  if (turn.responseId || turn.assistant) {
    li.append(line("assistant", "voxloop:", turn.assistant, "…"));
  }
  const meta = document.createElement("p");
  meta.className = "meta";
  meta.textContent = turnMeta(turn);
  if (turn.cutMs !== null) {
    const cut = document.createElement("span");
    cut.className = "cut";
    cut.textContent = ` · you interrupted: cut at ${(turn.cutMs / 1000).toFixed(2)} s`;
    meta.append(cut);
  }
  li.append(meta);
  return li;
}

let lastTurns = "";

export function render(view) {
  const state = $("state");
  state.dataset.state = view.state;
  state.textContent = STATE_LABELS[view.state] || view.state;
  $("talk").textContent = view.running ? "Stop" : "Talk";
  $("talk").classList.toggle("stop", view.running);
  $("talk").disabled = view.starting;
  $("mute").disabled = !view.running || view.starting;
  $("mute").textContent = view.muted ? "Unmute" : "Mute";
  $("level").style.width = view.running && !view.muted ? levelWidth(view.levelDbfs) : "0%";
  $("level-db").textContent = !view.running ? "mic off" : view.muted ? "muted"
    : view.levelDbfs < -90 ? "silent" : `${Math.round(view.levelDbfs)} dBFS`;
  $("connection").textContent = view.connection;
  $("engine").textContent = engineLabel(view.engine);
  $("turn-detection").textContent = turnDetectionLabel(view.turnDetection);
  $("playback").textContent = `underruns ${view.underruns} · barge-ins ${view.bargeIns}` +
    ` · reconnects ${view.reconnects}`;
  const message = $("message");
  message.hidden = !view.message;
  message.textContent = view.message ? view.message.text : "";
  message.classList.toggle("note", Boolean(view.message && view.message.note));
  $("key-form").hidden = !view.askKey;
  const turnsKey = JSON.stringify(view.turns);
  if (turnsKey !== lastTurns) {
    lastTurns = turnsKey;
    const list = $("turns");
    list.replaceChildren(...view.turns.map(turnItem));
    if (list.lastElementChild) list.lastElementChild.scrollIntoView({ block: "nearest" });
  }
}
