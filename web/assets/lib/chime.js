// A call whose media runs on Amazon Chime SDK (start answer `media.backend === "chime"`).
// The seat, the waiting room, admit, remove, end and resume stay on Bedside's signaling
// exactly as for the SFU (docs/signaling.md §12) — that part is inherited from Call — but no
// peer connection is made here: once signaling says this participant is in (never while it
// waits), it joins the Chime meeting with amazon-chime-sdk-js, from the bundle an operator
// builds under web/chime/ (served at /assets/chime/). A patient who waits gets its attendee
// without the JoinToken in the start answer: the whole attendee comes with its admission
// (`participant_admitted`, or `joined` when it comes back once admitted). It tells the page
// the same events as Call, so the room looks and behaves the same, plus `media` with the
// meeting's state (`connecting`, `connected`, `reconnecting`, `failed`).

import { Call } from './call.js';
import { openTrack } from './devices.js';

/** Where the bundle is served when it was built (web/chime/README.md). */
export const CHIME_BUNDLE = '/assets/chime/amazon-chime-sdk.js';
/** Chime names a participant's screen share `<ExternalUserId>#content`. */
const CONTENT_SUFFIX = '#content';

/**
 * Loads the Chime SDK bundle. Throws a problem the page can show: `chime_missing` when this
 * node has no bundle (404), `network` when it cannot be reached, `trouble` otherwise.
 */
export async function loadChime() {
  let response;
  try {
    response = await fetch(CHIME_BUNDLE, { method: 'HEAD', cache: 'no-store' });
  } catch {
    throw { code: 'network' };
  }
  if (response.status === 404) throw { code: 'chime_missing' };
  if (!response.ok) throw { code: 'trouble' };
  try {
    return await import(CHIME_BUNDLE);
  } catch {
    throw { code: 'trouble' };
  }
}

export class ChimeCall extends Call {
  /**
   * @param {object} options as for Call, plus
   * @param {object} options.sdk the loaded bundle (`loadChime()`)
   */
  constructor(options) {
    super(options);
    this.sdk = options.sdk;
    this.av = null;
    /** tileId → {participant, content, media, paused} of remote video tiles. */
    this.tiles = new Map();
    /** attendeeId → participant id of the remote attendees present. */
    this.attendees = new Map();
    this.audioEl = null;
    this.mediaState = 'idle';
    /** The Chime attendee with its JoinToken, once known (start answer or signaling). */
    this.attendee = null;
  }

  /** Keeps the attendee of a start or refresh answer when it has its JoinToken. */
  setGrant(answer) {
    super.setGrant(answer);
    this.takeAttendee(answer.media && answer.media.attendee);
  }

  /** Remembers `attendee` if it carries a JoinToken (a waiting patient's start answer has none). */
  takeAttendee(attendee) {
    if (attendee && typeof attendee.JoinToken === 'string') this.attendee = attendee;
  }

  /** `join` without an offer: SDP has no place in a Chime visit. */
  async sendJoin(socket) {
    socket.send({ type: 'join', protocol: 1, grant: this.grant });
  }

  /** Seated (or resumed): into the meeting at once unless still in the waiting room. */
  seated(msg) {
    this.recovered();
    this.takeAttendee(msg.attendee);
    if (!msg.waiting) this.startMeeting();
  }

  onMessage(msg) {
    const result = super.onMessage(msg);
    if (msg.type === 'participant_admitted' && msg.participant === this.me) {
      // The JoinToken a waiting patient's start answer left out comes with its admission.
      this.takeAttendee(msg.attendee);
      this.startMeeting();
    }
    return result;
  }

  setMedia(state) {
    this.mediaState = state;
    this.emit('media', state);
  }

  /** Joins the Chime meeting of the start answer, once; the page sees `media` states. */
  async startMeeting() {
    if (this.av || this.done) return;
    this.setMedia('connecting');
    let session;
    try {
      // Without a JoinToken (none from the start answer nor from signaling) there is no way in.
      if (!this.attendee) throw new Error('no JoinToken for the meeting');
      session = this.sdk.createMeetingSession({ ...this.media, attendee: this.attendee });
    } catch {
      this.setMedia('failed');
      this.finish('error');
      return;
    }
    const av = session.audioVideo;
    this.av = av;
    av.addObserver({
      audioVideoDidStartConnecting: (reconnecting) => {
        if (!reconnecting) return;
        this.setMedia('reconnecting');
        this.setReconnecting('media');
      },
      audioVideoDidStart: () => {
        this.setMedia('connected');
        this.emit('connected');
        this.recovered();
      },
      audioVideoDidStop: (status) => {
        if (this.done) return;
        // The meeting ended under us (deleted, failed for good): the seat cannot carry on.
        this.setMedia('failed');
        this.finish(status && typeof status.isFailure === 'function' && !status.isFailure() ? 'ended' : 'error');
      },
      connectionDidBecomePoor: () => this.emit('quality', 'poor'),
      connectionDidBecomeGood: () => this.emit('quality', 'good'),
      videoTileDidUpdate: (tile) => this.onTile(tile),
      videoTileWasRemoved: (tileId) => {
        this.tiles.delete(tileId);
        this.renderRemote();
      },
    });
    av.addContentShareObserver({
      contentShareDidStop: () => {
        if (!this.own.screen) return;
        this.own.screen = null;
        this.emit('screen', false);
      },
    });
    av.realtimeSubscribeToAttendeeIdPresence((attendeeId, present, externalUserId) => {
      if (!externalUserId || externalUserId === this.me || externalUserId.endsWith(CONTENT_SUFFIX)) return;
      if (present) {
        this.attendees.set(attendeeId, externalUserId);
        av.realtimeSubscribeToVolumeIndicator(attendeeId, (_id, _volume, muted) => {
          if (muted === null || muted === undefined) return;
          if (this.remoteMuted.get(externalUserId) === muted) return;
          this.remoteMuted.set(externalUserId, muted);
          this.renderRemote();
        });
      } else {
        this.attendees.delete(attendeeId);
        av.realtimeUnsubscribeFromVolumeIndicator(attendeeId);
      }
      this.renderRemote();
    });
    // Chime plays the meeting's mixed audio into an element; the page plays the same track in
    // its own (speaker choice, level meter), so this one stays silent and off the page.
    this.audioEl = document.createElement('audio');
    this.audioEl.muted = true;
    this.audioEl.addEventListener('loadedmetadata', () => this.renderRemote());
    try {
      if (this.own.audio.track) await av.startAudioInput(new MediaStream([this.own.audio.track]));
      if (this.own.video.track && !this.own.video.muted) {
        await av.startVideoInput(new MediaStream([this.own.video.track]));
      }
      await av.bindAudioElement(this.audioEl);
    } catch {
      // A device the SDK refuses still lets the person hear and see the others.
    }
    if (this.done) return;
    av.start();
    if (this.own.video.track && !this.own.video.muted) av.startLocalVideoTile();
    if (this.own.audio.muted) av.realtimeMuteLocalAudio();
  }

  onTile(tile) {
    if (!tile.tileId || tile.localTile || !tile.boundExternalUserId) return;
    const content = tile.isContent || tile.boundExternalUserId.endsWith(CONTENT_SUFFIX);
    const participant = tile.boundExternalUserId.replace(CONTENT_SUFFIX, '');
    if (participant === this.me) return;
    const stream = tile.boundVideoStream;
    const media = stream && stream.getVideoTracks()[0];
    if (!media) return;
    this.tiles.set(tile.tileId, { participant, content, media, paused: !!tile.paused });
    this.renderRemote();
  }

  /** The remote media as Call reports it: [{participant, kind, track, media, muted}]. */
  renderRemote() {
    const items = [];
    for (const tile of this.tiles.values()) {
      items.push({
        participant: tile.participant,
        kind: 'video',
        // Camera before screen, as the page orders a participant's videos by this number.
        track: `${tile.participant}:${tile.content ? 1 : 0}`,
        media: tile.media,
        muted: tile.paused,
      });
    }
    const mixed = this.audioEl && this.audioEl.srcObject && this.audioEl.srcObject.getAudioTracks()[0];
    const speaker = this.attendees.values().next().value;
    if (mixed && speaker) {
      // Chime mixes everyone's audio into one track: shown as the other person's.
      items.push({
        participant: speaker,
        kind: 'audio',
        track: `${speaker}:audio`,
        media: mixed,
        muted: this.remoteMuted.get(speaker) === true,
      });
    }
    this.emit('remote', items);
  }

  setMuted(muted) {
    this.own.audio.muted = muted;
    if (!this.av) return;
    if (muted) this.av.realtimeMuteLocalAudio();
    else this.av.realtimeUnmuteLocalAudio();
  }

  async setVideo(on, deviceId) {
    const own = this.own.video;
    if (!on) {
      own.muted = true;
      if (this.av) {
        this.av.stopLocalVideoTile();
        await this.av.stopVideoInput();
      }
      this.replaceLocalTrack(own, null);
    } else {
      const track = await openTrack('video', deviceId);
      own.track = track;
      this.stream.addTrack(track);
      if (this.av) {
        await this.av.startVideoInput(new MediaStream([track]));
        this.av.startLocalVideoTile();
      }
      own.muted = false;
    }
    this.emit('local', this.stream);
  }

  async switchDevice(kind, deviceId) {
    const own = this.own[kind];
    if (kind === 'video' && !own.track) return;
    const track = await openTrack(kind, deviceId);
    if (this.av) {
      if (kind === 'audio') await this.av.startAudioInput(new MediaStream([track]));
      else await this.av.startVideoInput(new MediaStream([track]));
    }
    this.replaceLocalTrack(own, track);
    this.emit('local', this.stream);
  }

  async shareScreen() {
    if (!this.av) return false;
    try {
      await this.av.startContentShareFromScreenCapture();
    } catch {
      return false;
    }
    this.own.screen = { id: null };
    this.emit('screen', true);
    return true;
  }

  stopScreen() {
    if (!this.own.screen) return;
    this.own.screen = null;
    if (this.av) this.av.stopContentShare();
    this.emit('screen', false);
  }

  finish(reason) {
    if (this.done) return;
    const av = this.av;
    const sharing = !!this.own.screen;
    this.own.screen = null;
    // Done first, so that what the SDK reports while stopping changes nothing.
    super.finish(reason);
    if (av) {
      if (sharing) av.stopContentShare();
      av.stop();
    }
  }
}
