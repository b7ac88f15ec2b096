// The websocket to /v1/realtime: connect, reconnect with backoff, and say why it failed.
//
// A browser cannot set an Authorization header on a websocket, so the API key travels
// as the subprotocol `openai-insecure-api-key.KEY`, offered beside `realtime` (the way
// OpenAI's API takes it from browsers). A browser also never learns why a handshake
// failed (it sees code 1006 only), so after a failure the page asks client.json: is
// the server there, does it want a key, is ours right, is it full?

const FIRST_WAIT_S = 0.5;
const MAX_WAIT_S = 8;
const KEY_SUBPROTOCOL = "openai-insecure-api-key.";

export function pageUrl(relative) {
  return new URL(relative, window.location.href);
}

export function realtimeUrl() {
  const url = pageUrl("v1/realtime");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

// GET client.json with the key: what the server says about itself, or null if it is gone.
export async function serverInfo(key) {
  try {
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const response = await fetch(pageUrl("client.json"), { headers, cache: "no-store" });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

export class Connection {
  // onOpen(), onEvent(event), onStatus({state, text, fatal, keyRefused})
  constructor({ key, onOpen, onEvent, onStatus }) {
    this.key = key;
    this.onOpen = onOpen;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.ws = null;
    this.stopped = false;
    this.waitS = FIRST_WAIT_S;
    this.attempt = 0;
    this.timer = null;
    this.reconnects = 0;
    this.everOpened = false;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "user stopped");
    this.ws = null;
  }

  send(event) {
    if (this.open) this.ws.send(JSON.stringify(event));
  }

  connect() {
    this.attempt += 1;
    const url = realtimeUrl();
    const protocols = ["realtime"];
    if (this.key) protocols.push(KEY_SUBPROTOCOL + this.key);
    let ws;
    try {
      ws = new WebSocket(url, protocols);
    } catch (err) {  // SyntaxError: a key a subprotocol cannot carry
      this.onStatus({ state: "failed", fatal: true, keyRefused: true,
        text: `The API key cannot be sent from a browser (${err.message}): it may use only ` +
          "letters, digits and !#$%&'*+-.^_`|~." });
      return;
    }
    this.ws = ws;
    let opened = false;
    this.onStatus({ state: "connecting", text: `connecting to ${url}` });
    ws.onopen = () => {
      opened = true;
      this.everOpened = true;
      this.waitS = FIRST_WAIT_S;
      this.attempt = 0;
      this.onStatus({ state: "connected", text: `connected to ${url}` });
      this.onOpen();
    };
    ws.onmessage = (e) => this.onEvent(JSON.parse(e.data));
    ws.onclose = (e) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      this.closed(opened, e);
    };
  }

  async closed(opened, closeEvent) {
    let why;
    if (opened) {
      why = closeEvent.reason
        ? `the server closed the connection: ${closeEvent.reason} (${closeEvent.code})`
        : `the connection was lost (code ${closeEvent.code})`;
    } else {
      const info = await serverInfo(this.key);
      if (this.stopped) return;
      if (info === null) {
        why = "the server is not answering (stopped, or the network is down)";
      } else if (info.api_key_required && !info.api_key_accepted) {
        this.onStatus({ state: "failed", fatal: true, keyRefused: true,
          text: this.key ? "The server refused the API key: enter the right one."
            : "This server needs an API key: enter it below." });
        return;
      } else if (info.stopping) {
        why = "the server is shutting down";
      } else if (info.sessions >= info.max_sessions) {
        why = `the server is full (${info.max_sessions} sessions are open)`;
      } else {
        why = "the server refused the websocket";
      }
    }
    this.reconnects += 1;
    const wait = this.waitS;
    this.waitS = Math.min(MAX_WAIT_S, 2 * this.waitS);
    this.onStatus({ state: "reconnecting",
      text: `${why}; reconnecting in ${wait.toFixed(1)} s (try ${this.attempt + 1})` });
    this.timer = setTimeout(() => {
      if (!this.stopped) this.connect();
    }, 1000 * wait);
  }
}
