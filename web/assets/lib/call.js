// One participant's call: the session grant, the signaling socket and one RTCPeerConnection
// (docs/signaling.md). The browser is the polite peer: a server offer that crosses ours wins,
// ours is rolled back and sent again. After a network blip the call resumes its seat on a new
// socket (within the server's 30 s window) and restarts ICE; failing that it joins afresh.
// The page hears about everything through `emit(type, detail)`.

import { Socket } from './signaling.js';
import { post } from './api.js';
import { openTrack } from './devices.js';
import { readQuality } from './quality.js';

/** Resume only inside the server's 30 s window, with a little margin. */
const RESUME_WINDOW_MS = 27000;
/** ICE may recover by itself from "disconnected"; restart it only after this long. */
const ICE_GRACE_MS = 2500;
const QUALITY_EVERY_MS = 2000;
/**
 * The camera as three simulcast layers (docs/signaling.md §4): quarter, half and full
 * resolution, low to high. The SFU forwards each viewer the one its link and screen hold.
 */
const CAMERA_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', maxBitrate: 1500000 },
];
/** `video_size` goes out at most this often per track. */
const SIZE_EVERY_MS = 500;

export class Call {
  /**
   * @param {object} options
   * @param {() => Promise<object>} options.start gets a grant answer (start or start-authenticated)
   * @param {(type: string, detail?: any) => void} options.emit
   * @param {MediaStream} options.stream the camera and microphone, either may be missing
   * @param {{audio: boolean, video: boolean}} options.devices which devices exist
   */
  constructor({ start, emit, stream, devices }) {
    this.start = start;
    this.emit = emit;
    this.stream = stream;
    this.devices = devices;
    this.own = {
      audio: { track: stream.getAudioTracks()[0] || null, muted: false },
      video: { track: stream.getVideoTracks()[0] || null, muted: false },
      screen: null,
    };
    this.midInfo = new Map();
    this.remoteMuted = new Map();
    this.remotePaused = new Set();
    this.sizes = new Map();
    this.roster = new Map();
    this.chain = Promise.resolve();
    this.done = false;
    this.reconnecting = null;
  }

  /** Starts the visit (consumes the link) and takes the seat. Throws the start problem. */
  async join() {
    await this.enter(await this.start());
  }

  /** Takes the seat with a start answer already in hand. */
  async enter(answer) {
    this.setGrant(answer);
    await this.connect(false);
  }

  setGrant(answer) {
    this.grant = answer.grant;
    this.media = answer.media;
    this.me = answer.participant_id;
    this.role = answer.role;
    // A refresh brings fresh TURN credentials: hand them to the live connection as well, so
    // that an ICE restart after the first ones expired (turn.ttl_seconds) still gets a relay.
    if (this.pc && this.pc.signalingState !== 'closed' && answer.media.ice_servers) {
      try {
        this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: answer.media.ice_servers });
      } catch {
        // Refused: the connection keeps its credentials; a failed restart rejoins afresh.
      }
    }
    clearTimeout(this.refreshTimer);
    const lifetime = new Date(answer.grant_expires_at).getTime() - Date.now();
    this.refreshTimer = setTimeout(() => this.refreshGrant(), Math.max(10000, lifetime * 0.7));
  }

  async refreshGrant() {
    if (this.done) return false;
    const answer = await post('/api/grants/refresh', { grant: this.grant });
    if (answer.ok) {
      this.setGrant(answer.data);
      return true;
    }
    this.refreshTimer = setTimeout(() => this.refreshGrant(), 15000);
    return false;
  }

  buildPeer() {
    if (this.pc) this.pc.close();
    this.midInfo.clear();
    this.remoteMuted.clear();
    this.remotePaused.clear();
    for (const entry of this.sizes.values()) clearTimeout(entry.timer);
    this.sizes.clear();
    // `ice_transport_policy: "relay"` (turn.policy) keeps every candidate but TURN's out, so
    // this device's own addresses never reach the other side.
    const pc = new RTCPeerConnection({
      iceServers: this.media.ice_servers || [],
      iceTransportPolicy: this.media.ice_transport_policy === 'relay' ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    for (const kind of ['audio', 'video']) {
      const own = this.own[kind];
      own.id = null;
      own.transceiver = this.devices[kind] ? addTransceiver(pc, own.track || kind, this.stream, kind === 'video') : null;
    }
    if (this.own.screen) this.stopScreen(false);
    pc.addEventListener('track', () => this.renderRemote());
    pc.addEventListener('iceconnectionstatechange', () => this.onIce(pc));
    return pc;
  }

  /** Opens a socket and sends `join` with a fresh peer connection, or `resume`. */
  async connect(resume) {
    const socket = new Socket(
      this.media.signaling_url,
      (msg) => { if (socket === this.socket) this.onMessage(msg); },
      (code) => { if (socket === this.socket) this.onClose(code); },
    );
    this.socket = socket;
    try {
      await socket.opened;
    } catch {
      return; // onClose follows and decides what next.
    }
    if (resume) {
      socket.send({ type: 'resume', grant: this.grant, session: this.session });
      return;
    }
    await this.sendJoin(socket);
  }

  /** Sends `join` on a fresh socket, with the offer of a fresh peer connection. */
  async sendJoin(socket) {
    const pc = this.buildPeer();
    this.offering = true;
    this.needOffer = false;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    socket.send({ type: 'join', protocol: 1, grant: this.grant, offer: pc.localDescription.sdp });
  }

  /** Runs SDP steps one at a time, in arrival order. */
  queue(step) {
    this.chain = this.chain.then(step).catch((error) => {
      if (!this.done) this.emit('problem', error && error.name);
    });
    return this.chain;
  }

  /** Sends our own offer (screen share, track stopped, ICE restart) when it is our turn. */
  negotiate({ iceRestart = false } = {}) {
    this.iceRestart = this.iceRestart || iceRestart;
    return this.queue(async () => {
      const pc = this.pc;
      if (this.offering || pc.signalingState !== 'stable' || !this.socket || this.socket.closed) {
        this.needOffer = true;
        return;
      }
      this.needOffer = false;
      this.offering = true;
      const offer = await pc.createOffer({ iceRestart: this.iceRestart });
      this.iceRestart = false;
      await pc.setLocalDescription(offer);
      if (!this.socket.send({ type: 'offer', sdp: pc.localDescription.sdp })) this.needOffer = true;
    });
  }

  onMessage(msg) {
    switch (msg.type) {
      case 'joined': return this.onJoined(msg);
      case 'answer':
        return this.queue(async () => {
          await this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
          this.offering = false;
          if (this.needOffer) this.negotiate();
        });
      case 'offer':
        return this.queue(async () => {
          const pc = this.pc;
          if (pc.signalingState === 'have-local-offer') {
            // Polite peer: the server's offer wins; ours goes again after this answer.
            await pc.setLocalDescription({ type: 'rollback' });
            this.needOffer = true;
          }
          this.offering = false;
          await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
          await pc.setLocalDescription();
          this.socket.send({ type: 'answer', sdp: pc.localDescription.sdp });
          this.renderRemote();
          if (this.needOffer) this.negotiate();
        });
      case 'track_published': return this.onPublished(msg);
      case 'track_unpublished':
        for (const [mid, info] of this.midInfo) if (info.track === msg.track) this.midInfo.delete(mid);
        this.remotePaused.delete(msg.track);
        this.sizes.delete(msg.track);
        return this.renderRemote();
      case 'active_speaker': return this.emit('speaker', msg.participant);
      case 'connection_quality':
        // About the others only: the page measures its own connection itself (quality.js).
        if (msg.participant === this.me) return undefined;
        return this.emit('peer-quality', { participant: msg.participant, quality: msg.quality });
      case 'track_paused':
        this.remotePaused.add(msg.track);
        return this.renderRemote();
      case 'track_resumed':
        this.remotePaused.delete(msg.track);
        return this.renderRemote();
      case 'track_muted':
        if (msg.participant === this.me) return undefined;
        this.remoteMuted.set(msg.track, msg.muted);
        return this.renderRemote();
      case 'participant_joined':
        this.roster.set(msg.participant, { name: msg.name, role: msg.role, waiting: false });
        return this.emit('roster', this.roster);
      case 'participant_waiting':
        this.roster.set(msg.participant, { name: msg.name, role: 'patient', waiting: true });
        return this.emit('roster', this.roster);
      case 'participant_admitted':
        if (msg.participant === this.me) {
          this.waiting = false;
          return this.emit('admitted');
        }
        if (this.roster.has(msg.participant)) this.roster.get(msg.participant).waiting = false;
        return this.emit('roster', this.roster);
      case 'participant_left':
        this.roster.delete(msg.participant);
        for (const [mid, info] of this.midInfo) if (info.participant === msg.participant) this.midInfo.delete(mid);
        this.renderRemote();
        return this.emit('roster', this.roster);
      case 'visit_ended': return this.finish('ended');
      case 'server_shutdown':
        // The seat is gone; the 4503 that follows rejoins after this long.
        this.retryAfterMs = msg.retry_after_ms;
        return this.setReconnecting('signaling');
      case 'error':
        if (msg.code === 'offer_collision') this.needOffer = true;
        return undefined;
      default: return undefined;
    }
  }

  onJoined(msg) {
    this.droppedAt = null;
    this.session = msg.session;
    this.waiting = msg.waiting;
    this.roster.clear();
    for (const p of msg.participants || []) {
      this.roster.set(p.participant, { name: p.name, role: p.role, waiting: p.waiting });
    }
    this.emit('joined', { waiting: msg.waiting, resumed: msg.resumed });
    this.emit('roster', this.roster);
    this.seated(msg);
  }

  /** The media side once the seat is taken (or resumed): recover the peer connection. */
  seated(msg) {
    if (msg.resumed) {
      this.queue(async () => {
        // An offer of ours that went out as the socket died never arrived: send it again.
        if (this.pc.signalingState === 'have-local-offer') {
          await this.pc.setLocalDescription({ type: 'rollback' });
          this.offering = false;
          this.needOffer = true;
        }
      });
      const ice = this.pc.iceConnectionState;
      if (ice === 'connected' || ice === 'completed') this.recovered();
      else this.restartIce();
      if (this.needOffer) this.negotiate();
    } else {
      this.recovered();
    }
    this.startQuality();
  }

  onPublished(msg) {
    if (msg.participant !== this.me) {
      this.midInfo.set(msg.mid, { participant: msg.participant, kind: msg.kind, track: msg.track });
      this.renderRemote();
      return;
    }
    for (const kind of ['audio', 'video']) {
      const own = this.own[kind];
      if (own.transceiver && own.transceiver.mid === msg.mid) {
        own.id = msg.track;
        // A mute pressed before the server named the track is sent now.
        if (own.muted) this.socket.send({ type: 'mute', track: own.id, muted: true });
      }
    }
    if (this.own.screen && this.own.screen.transceiver.mid === msg.mid) this.own.screen.id = msg.track;
  }

  /**
   * Tells the server the size (device pixels; 0 × 0 when hidden) at which another
   * participant's video `track` is shown, so it sends no larger layer than that needs. Sent
   * when it changed, at most every SIZE_EVERY_MS per track; the last size always goes out.
   */
  reportSize(track, width, height) {
    if (!track || !this.socket) return;
    const size = { width: Math.min(8192, Math.round(width)), height: Math.min(8192, Math.round(height)) };
    const entry = this.sizes.get(track) || { sent: null, at: 0, timer: null };
    this.sizes.set(track, entry);
    entry.want = size;
    const send = () => {
      entry.timer = null;
      const { want } = entry;
      if (entry.sent && entry.sent.width === want.width && entry.sent.height === want.height) return;
      if (this.socket.send({ type: 'video_size', track, ...want })) {
        entry.sent = want;
        entry.at = Date.now();
      }
    };
    if (entry.timer) return;
    const wait = entry.at + SIZE_EVERY_MS - Date.now();
    if (wait <= 0) send();
    else entry.timer = setTimeout(send, wait);
  }

  /** Tells the page which remote tracks are live: [{participant, kind, track, media, muted}]. */
  renderRemote() {
    if (!this.pc) return;
    const items = [];
    for (const t of this.pc.getTransceivers()) {
      if (!t.mid || t.stopped || t.currentDirection === 'stopped') continue;
      const info = this.midInfo.get(t.mid);
      if (!info || !t.receiver.track) continue;
      // A video the SFU paused for our link is inactive until it resumes; it stays, with its notice.
      if (t.currentDirection === 'inactive' && !this.remotePaused.has(info.track)) continue;
      items.push({
        ...info,
        media: t.receiver.track,
        muted: this.remoteMuted.get(info.track) === true,
        paused: this.remotePaused.has(info.track),
      });
    }
    this.emit('remote', items);
  }

  onIce(pc) {
    if (pc !== this.pc || this.done) return;
    const state = pc.iceConnectionState;
    clearTimeout(this.iceTimer);
    if (state === 'connected' || state === 'completed') {
      this.emit('connected');
      if (this.reconnecting === 'media') this.recovered();
    } else if (state === 'disconnected') {
      this.iceTimer = setTimeout(() => this.restartIce(), ICE_GRACE_MS);
    } else if (state === 'failed') {
      this.restartIce();
    }
  }

  restartIce() {
    if (this.done) return;
    const state = this.pc && this.pc.iceConnectionState;
    if (state === 'connected' || state === 'completed') return;
    this.setReconnecting('media');
    this.negotiate({ iceRestart: true });
  }

  setReconnecting(what) {
    if (this.reconnecting === what) return;
    this.reconnecting = what;
    this.emit('reconnecting', what);
  }

  recovered() {
    if (!this.reconnecting) return;
    this.reconnecting = null;
    this.emit('reconnected');
  }

  onClose(code) {
    if (this.done) return;
    this.stopQuality();
    switch (code) {
      case 4410: return this.finish('ended');
      case 4403: return this.finish('removed');
      case 4409: return this.finish('replaced');
      case 4400: return this.finish('error');
      case 4401: return this.rejoin(0);
      case 4503: return this.rejoin(this.retryAfterMs ?? 3000);
      default: return this.resume();
    }
  }

  /**
   * Tries `resume` on a new socket, backing off; a socket that closes again before `joined`
   * comes back here. Once the seat's window has passed, joins afresh instead.
   */
  resume() {
    this.setReconnecting('signaling');
    if (!this.droppedAt) {
      this.droppedAt = Date.now();
      this.backoff = 300;
    }
    if (Date.now() - this.droppedAt > RESUME_WINDOW_MS) {
      this.droppedAt = null;
      this.rejoin(0);
      return;
    }
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 4000);
    this.resumeAttempt = setTimeout(() => { if (!this.done) this.connect(true); }, delay);
  }

  /** A new seat from scratch: a fresh grant if needed and a new peer connection. */
  async rejoin(delay) {
    this.setReconnecting('signaling');
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (this.done) return;
    if (!(await this.refreshGrant())) {
      try {
        this.setGrant(await this.start());
      } catch (problem) {
        return this.finish(problem && problem.code === 'visit_ended' ? 'ended' : 'error');
      }
    }
    await this.connect(false);
  }

  startQuality() {
    this.stopQuality();
    let previous = null;
    this.qualityTimer = setInterval(async () => {
      if (!this.pc || this.done) return;
      try {
        previous = await readQuality(this.pc, previous);
        this.emit('quality', this.reconnecting ? 'reconnecting' : previous.level);
      } catch { /* the peer connection closed meanwhile */ }
    }, QUALITY_EVERY_MS);
  }

  stopQuality() {
    clearInterval(this.qualityTimer);
  }

  sendMute(own) {
    if (own.id && this.socket) this.socket.send({ type: 'mute', track: own.id, muted: own.muted });
  }

  /** Mutes or unmutes the microphone, for us (no sound leaves) and for the others (shown). */
  setMuted(muted) {
    const own = this.own.audio;
    own.muted = muted;
    if (own.track) own.track.enabled = !muted;
    this.sendMute(own);
  }

  /** Stops the camera (its light goes off) or starts it again on `deviceId`. */
  async setVideo(on, deviceId) {
    const own = this.own.video;
    if (!own.transceiver) return;
    if (!on) {
      own.muted = true;
      this.sendMute(own);
      this.replaceLocalTrack(own, null);
      await own.transceiver.sender.replaceTrack(null);
    } else {
      const track = await openTrack('video', deviceId);
      own.track = track;
      this.stream.addTrack(track);
      await own.transceiver.sender.replaceTrack(track);
      own.muted = false;
      this.sendMute(own);
    }
    this.emit('local', this.stream);
  }

  /** Moves microphone or camera to another device without renegotiating (replaceTrack). */
  async switchDevice(kind, deviceId) {
    const own = this.own[kind];
    if (!own.transceiver || (kind === 'video' && !own.track)) return;
    const track = await openTrack(kind, deviceId);
    if (kind === 'audio') track.enabled = !own.muted;
    await own.transceiver.sender.replaceTrack(track);
    this.replaceLocalTrack(own, track);
    this.emit('local', this.stream);
  }

  /** Puts `track` (or none) where `own`'s local track was: the old one stops and leaves the preview stream. */
  replaceLocalTrack(own, track) {
    if (own.track) {
      own.track.stop();
      this.stream.removeTrack(own.track);
    }
    own.track = track;
    if (track) this.stream.addTrack(track);
  }

  /** Shares a screen or window as a second video; resolves false if the person cancelled. */
  async shareScreen() {
    let display;
    try {
      display = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    } catch {
      return false;
    }
    const track = display.getVideoTracks()[0];
    const transceiver = this.pc.addTransceiver(track, { direction: 'sendonly' });
    this.own.screen = { track, transceiver, id: null };
    track.addEventListener('ended', () => this.stopScreen(true));
    this.negotiate();
    this.emit('screen', true);
    return true;
  }

  stopScreen(renegotiate = true) {
    const screen = this.own.screen;
    if (!screen) return;
    this.own.screen = null;
    screen.track.stop();
    if (renegotiate) {
      screen.transceiver.stop();
      this.negotiate();
    }
    this.emit('screen', false);
  }

  /** Lets a waiting patient in (clinicians). */
  admit(participant) {
    this.socket.send({ type: 'admit', participant });
  }

  /** Ends the visit for everyone (clinicians); `visit_ended` follows. */
  endVisit() {
    this.socket.send({ type: 'end_visit' });
  }

  /** Leaves for good. */
  leave() {
    if (this.socket) this.socket.send({ type: 'leave' });
    this.finish('left');
  }

  finish(reason) {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.iceTimer);
    clearTimeout(this.resumeAttempt);
    this.stopQuality();
    if (this.socket) this.socket.close();
    if (this.pc) this.pc.close();
    for (const track of this.stream.getTracks()) track.stop();
    if (this.own.screen) this.own.screen.track.stop();
    this.emit('ended', reason);
  }
}

/**
 * Adds a send-only transceiver for `track` (or a kind); a camera goes as CAMERA_LAYERS where
 * the browser takes simulcast, as one encoding where it refuses them.
 */
function addTransceiver(pc, track, stream, camera) {
  const init = { direction: 'sendonly', streams: [stream] };
  if (camera) {
    try {
      return pc.addTransceiver(track, { ...init, sendEncodings: CAMERA_LAYERS });
    } catch {
      // Older browsers throw on several encodings: one it is.
    }
  }
  return pc.addTransceiver(track, init);
}
