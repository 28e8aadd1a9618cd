// One signaling WebSocket (docs/signaling.md): JSON frames in and out, a ping every 15 s so a
// dead connection is noticed, and the close code handed to the owner.

const PING_EVERY_MS = 15000;
const PONG_TIMEOUT_MS = 10000;

export class Socket {
  /**
   * @param {string} url the `signaling_url` from the start answer
   * @param {(msg: object) => void} onMessage every frame from the server
   * @param {(code: number) => void} onClose once, with the close code (1006 when the network dropped it)
   */
  constructor(url, onMessage, onClose) {
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.closed = false;
    this.ws = new WebSocket(url);
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener('open', resolve, { once: true });
      this.ws.addEventListener('error', reject, { once: true });
    });
    this.ws.addEventListener('message', (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch { return; }
      if (msg.type === 'pong') { this.lastPong = Date.now(); return; }
      this.onMessage(msg);
    });
    this.ws.addEventListener('close', (event) => this.finish(event.code));
    this.lastPong = Date.now();
    this.pingId = 0;
    this.timer = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  ping() {
    if (Date.now() - this.lastPong > PING_EVERY_MS + PONG_TIMEOUT_MS) {
      // No answer for too long: the network is gone even if the browser has not noticed.
      this.ws.close();
      this.finish(1006);
      return;
    }
    this.send({ type: 'ping', id: ++this.pingId });
  }

  finish(code) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.onClose(code);
  }

  /** Sends a frame; false when the socket is not open. */
  send(msg) {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Closes without telling the owner (it chose to). */
  close() {
    this.closed = true;
    clearInterval(this.timer);
    try { this.ws.close(1000); } catch { /* already closed */ }
  }
}
