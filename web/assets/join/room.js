// The waiting room and the call: the other person large, self-view small, the controls, the
// connection-quality indicator, the remote mute state, the clinician's Admit and End visit,
// and a banner while the call reconnects by itself.

import { h, announce, focusHeading } from '../lib/dom.js';
import { canPickSpeaker, canShareScreen, fillSelect, listDevices, watchLevel } from '../lib/devices.js';
import { QUALITY_WORDS } from '../lib/quality.js';

const icon = (name) => h('img', { src: `/assets/icons/${name}.svg`, alt: '', width: 24, height: 24, class: 'icon' });

function control(name, label, onclick, extra = {}) {
  return h('button', { type: 'button', class: `control control-${name}`, onclick, ...extra },
    icon(name), h('span', { class: 'control-label' }, label));
}

function setControl(button, name, label) {
  button.replaceChildren(icon(name), h('span', { class: 'control-label' }, label));
}

/** Publisher mid of a track id `<participant>:<mid>`, for ordering camera before screen. */
const publisherMid = (track) => Number(track.slice(track.lastIndexOf(':') + 1)) || 0;

/**
 * Runs the room in `container` for `call` (already constructed, not yet joined by the caller).
 * `onFinish(reason)` is called once the call is over.
 */
export function runRoom(container, { call, role, otherName, speaker, onFinish }) {
  const clinician = role === 'clinician';
  const heading = h('h1', { class: 'room-title' }, clinician ? 'Visit with your patient' : `Visit with ${otherName || 'your clinician'}`);
  const banner = h('div', { class: 'banner', role: 'status', hidden: true });
  const admitName = h('span', {});
  const admitButton = h('button', { type: 'button', class: 'primary' }, 'Admit');
  const admitNotice = h('div', { class: 'admit-notice', role: 'region', 'aria-label': 'Waiting room', hidden: true },
    h('p', {}, admitName, ' is in the waiting room.'), admitButton);

  const remoteVideo = h('video', { class: 'remote-video', autoplay: true, playsInline: true, muted: true, 'aria-label': `${clinician ? 'Patient' : otherName || 'Clinician'} video` });
  const remoteHolder = h('p', { class: 'placeholder' }, clinician ? 'Your patient hasn’t joined yet.' : 'Connecting…');
  const remoteName = h('span', { class: 'name' }, clinician ? 'Patient' : otherName || 'Clinician');
  const remoteMic = h('span', { class: 'badge mic-off', hidden: true }, icon('mic-off'), 'Microphone off');
  const remoteLevel = h('span', { class: 'speaking', 'aria-hidden': 'true', 'data-level': '0' });
  // Who the server hears speaking (`active_speaker`): shown, not announced, since it changes
  // every few seconds in a conversation.
  const remoteSpeaking = h('span', { class: 'badge is-speaking', hidden: true }, 'Speaking');
  // The other participant's connection as the server sees it (`connection_quality`), shown
  // only when it hurts the call.
  const remoteWeak = h('span', { class: 'badge weak-link', hidden: true });
  // The SFU paused this video for our weak downlink (track_paused); audio goes on.
  const remotePaused = h('p', { class: 'paused-notice', hidden: true }, 'Video paused — weak connection');
  const remoteTile = h('div', { class: 'tile remote', 'data-video': 'none' },
    remoteVideo, remoteHolder, remotePaused, h('div', { class: 'label' }, remoteLevel, remoteName, remoteMic, remoteSpeaking, remoteWeak));
  const screenVideo = h('video', { class: 'screen-video', autoplay: true, playsInline: true, muted: true, 'aria-label': 'Shared screen' });
  const screenTile = h('div', { class: 'tile screen', hidden: true }, screenVideo, h('div', { class: 'label' }, h('span', { class: 'name' }, 'Shared screen')));
  const selfVideo = h('video', { class: 'self-video mirror', autoplay: true, playsInline: true, muted: true, 'aria-label': 'Your video' });
  const selfOff = h('p', { class: 'placeholder' }, 'Camera off');
  const selfMic = h('span', { class: 'badge mic-off', hidden: true }, icon('mic-off'), 'Muted');
  const selfSpeaking = h('span', { class: 'badge is-speaking', hidden: true }, 'Speaking');
  const selfTile = h('div', { class: 'tile self' }, selfVideo, selfOff, h('div', { class: 'label' }, h('span', { class: 'name' }, 'You'), selfMic, selfSpeaking));
  const audios = h('div', { class: 'audios', hidden: true });
  const soundButton = h('button', { type: 'button', class: 'secondary sound', hidden: true }, 'Turn on sound');

  const waitingCard = h('div', { class: 'waiting-card' },
    h('div', { class: 'pulse', 'aria-hidden': 'true' }),
    h('h2', {}, 'You’re in the waiting room'),
    h('p', {}, `${otherName || 'Your clinician'} knows you’re here and will let you in soon.`),
    h('p', {}, 'Please keep this page open. You can check your camera and sound while you wait.'));

  const quality = h('p', { class: 'quality', 'data-level': 'good' }, h('span', { class: 'bars', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), h('span', { class: 'quality-text' }, 'Connecting…'));

  const mute = control('mic', 'Mute', () => {
    const muted = !call.own.audio.muted;
    call.setMuted(muted);
    setControl(mute, muted ? 'mic-off' : 'mic', muted ? 'Unmute' : 'Mute');
    mute.classList.toggle('off', muted);
    selfMic.hidden = !muted;
    announce(muted ? 'Your microphone is off' : 'Your microphone is on');
  });
  const video = control('cam', 'Stop video', async () => {
    const on = call.own.video.muted;
    video.disabled = true;
    try {
      await call.setVideo(on, devices.camera);
      setControl(video, on ? 'cam' : 'cam-off', on ? 'Stop video' : 'Start video');
      video.classList.toggle('off', !on);
      announce(on ? 'Your camera is on' : 'Your camera is off');
    } catch {
      announce('Your camera did not start');
    }
    video.disabled = false;
  });
  const share = control('screen', 'Share screen', async () => {
    if (call.own.screen) {
      call.stopScreen();
      return;
    }
    await call.shareScreen();
  }, { 'aria-pressed': 'false' });
  const settings = control('settings', 'Devices', () => {
    const open = panel.hidden;
    panel.hidden = !open;
    settings.setAttribute('aria-expanded', String(open));
    if (open) refreshDevices();
  }, { 'aria-expanded': 'false', 'aria-controls': 'devices-panel' });
  const leave = control('leave', 'Leave', () => call.leave(), { class: 'control control-leave danger' });
  const end = clinician ? control('end', 'End visit', () => { end.disabled = true; call.endVisit(); }, { class: 'control control-end danger' }) : null;
  if (!canShareScreen()) share.hidden = true;
  if (!call.devices.video) video.hidden = true;
  if (!call.devices.audio) mute.hidden = true;

  const devices = { camera: null, microphone: null, speaker };
  const cameraSelect = h('select', { id: 'room-camera' });
  const micSelect = h('select', { id: 'room-microphone' });
  const speakerSelect = h('select', { id: 'room-speaker' });
  const field = (id, label, select) => h('div', { class: 'field', 'data-for': id }, h('label', { for: id }, label), select);
  const panel = h('div', { class: 'devices-panel', id: 'devices-panel', role: 'region', 'aria-label': 'Devices', hidden: true },
    field('room-camera', 'Camera', cameraSelect), field('room-microphone', 'Microphone', micSelect), field('room-speaker', 'Speaker', speakerSelect));

  const controls = h('div', { class: 'controls', role: 'group', 'aria-label': 'Call controls' }, mute, video, share, settings, leave, end);
  const stage = h('div', { class: 'stage' }, remoteTile, screenTile, selfTile);
  const room = h('section', { class: 'room', 'data-phase': 'joining' },
    h('div', { class: 'room-head' }, heading, quality), banner, admitNotice, waitingCard, stage, soundButton, panel, controls, audios);
  container.replaceChildren(room);

  async function refreshDevices() {
    const lists = await listDevices();
    fillSelect(cameraSelect, lists.videoinput, call.own.video.track?.getSettings().deviceId, 'Camera');
    fillSelect(micSelect, lists.audioinput, call.own.audio.track?.getSettings().deviceId, 'Microphone');
    fillSelect(speakerSelect, lists.audiooutput, devices.speaker, 'Speaker');
    panel.querySelector('[data-for="room-camera"]').hidden = !call.devices.video;
    panel.querySelector('[data-for="room-microphone"]').hidden = !call.devices.audio;
    panel.querySelector('[data-for="room-speaker"]').hidden = !canPickSpeaker() || lists.audiooutput.length < 1;
  }
  cameraSelect.addEventListener('change', async () => {
    devices.camera = cameraSelect.value;
    await call.switchDevice('video', cameraSelect.value).catch(() => announce('That camera did not start'));
  });
  micSelect.addEventListener('change', async () => {
    await call.switchDevice('audio', micSelect.value).catch(() => announce('That microphone did not start'));
  });
  speakerSelect.addEventListener('change', () => {
    devices.speaker = speakerSelect.value;
    for (const el of audios.querySelectorAll('audio')) el.setSinkId(devices.speaker).catch(() => {});
  });

  function showSelf() {
    const track = call.stream.getVideoTracks()[0];
    const current = selfVideo.srcObject && selfVideo.srcObject.getVideoTracks()[0];
    if (track !== current) selfVideo.srcObject = track ? new MediaStream([track]) : null;
    selfTile.dataset.video = track ? 'on' : 'off';
  }
  showSelf();

  let stopLevel = () => {};
  let levelTrack = null;
  function play(el) {
    const playing = el.play();
    if (playing) playing.catch(() => { soundButton.hidden = false; });
  }
  soundButton.addEventListener('click', () => {
    soundButton.hidden = true;
    for (const el of audios.querySelectorAll('audio')) play(el);
  });

  // Each remote video reports the size it is shown at, so the SFU sends no larger layer.
  const shown = new Map();
  const reportSize = (el) => {
    const track = shown.get(el);
    if (!track || !call.reportSize) return;
    const visible = !document.hidden && el.offsetParent !== null && el.clientWidth > 0;
    const scale = window.devicePixelRatio || 1;
    call.reportSize(track, visible ? el.clientWidth * scale : 0, visible ? el.clientHeight * scale : 0);
  };
  const sizes = typeof ResizeObserver === 'function'
    ? new ResizeObserver((entries) => { for (const entry of entries) reportSize(entry.target); })
    : null;
  document.addEventListener('visibilitychange', () => { for (const el of shown.keys()) reportSize(el); });

  function showRemote(items) {
    const others = items.filter((i) => i.participant !== call.me);
    const first = others[0] && others[0].participant;
    const mine = others.filter((i) => i.participant === first);
    const videos = mine.filter((i) => i.kind === 'video').sort((a, b) => publisherMid(a.track) - publisherMid(b.track));
    const cameraItem = videos[0];
    const screenItem = videos[1];
    const audioItem = mine.find((i) => i.kind === 'audio');
    const setVideo = (el, item) => {
      const current = el.srcObject && el.srcObject.getVideoTracks()[0];
      if (!item) {
        if (current) el.srcObject = null;
      } else if (current !== item.media) {
        el.srcObject = new MediaStream([item.media]);
      }
    };
    setVideo(remoteVideo, cameraItem);
    setVideo(screenVideo, screenItem);
    screenTile.hidden = !screenItem;
    for (const [el, item] of [[remoteVideo, cameraItem], [screenVideo, screenItem]]) {
      const track = item ? item.track : null;
      if (shown.get(el) === track) continue;
      if (sizes) sizes.unobserve(el);
      if (track) {
        shown.set(el, track);
        if (sizes) sizes.observe(el);
        reportSize(el);
      } else {
        shown.delete(el);
      }
    }
    const paused = !!cameraItem && cameraItem.paused && !cameraItem.muted;
    if (paused !== !remotePaused.hidden) {
      remotePaused.hidden = !paused;
      remoteTile.dataset.paused = String(paused);
      announce(paused
        ? `${remoteName.textContent}’s video is paused: your connection is weak. You can still hear each other.`
        : `${remoteName.textContent}’s video is back.`);
    }
    stage.classList.toggle('sharing', !!screenItem);
    const cameraOn = !!cameraItem && !cameraItem.muted;
    remoteTile.dataset.video = cameraOn ? 'on' : 'off';
    if (first) {
      remoteHolder.textContent = cameraItem && cameraItem.muted ? 'Camera off' : 'Connecting video…';
    }
    const wasMuted = !remoteMic.hidden;
    remoteMic.hidden = !(audioItem && audioItem.muted);
    if (wasMuted !== !remoteMic.hidden) {
      announce(`${remoteName.textContent}’s microphone is ${remoteMic.hidden ? 'on' : 'off'}`);
    }
    // One <audio> per remote audio track; stale ones go.
    const live = new Set(others.filter((i) => i.kind === 'audio').map((i) => i.track));
    for (const el of audios.querySelectorAll('audio')) if (!live.has(el.dataset.track)) el.remove();
    for (const item of others.filter((i) => i.kind === 'audio')) {
      let el = audios.querySelector(`audio[data-track="${CSS.escape(item.track)}"]`);
      if (!el) {
        el = h('audio', { autoplay: true, 'data-track': item.track });
        el.srcObject = new MediaStream([item.media]);
        if (devices.speaker && el.setSinkId) el.setSinkId(devices.speaker).catch(() => {});
        audios.append(el);
        play(el);
      }
    }
    if (audioItem && audioItem.media !== levelTrack) {
      stopLevel();
      levelTrack = audioItem.media;
      stopLevel = watchLevel(levelTrack, (level) => {
        remoteLevel.dataset.level = level.toFixed(2);
        remoteTile.classList.toggle('talking', level > 0.2);
      });
    }
  }

  function showRoster(roster) {
    let waiting = null;
    let other = null;
    for (const [id, p] of roster) {
      if (p.waiting && !waiting) waiting = { id, ...p };
      if (!p.waiting && !other) other = p;
    }
    if (clinician) {
      admitNotice.hidden = !waiting;
      if (waiting) {
        admitName.textContent = waiting.name || 'Your patient';
        admitButton.onclick = () => {
          admitButton.disabled = true;
          call.admit(waiting.id);
        };
        admitButton.disabled = false;
        if (admitNotice.dataset.for !== waiting.id) {
          admitNotice.dataset.for = waiting.id;
          announce(`${admitNotice.textContent.replace('Admit', '').trim()} Press Admit to let them in.`);
        }
      } else {
        admitNotice.dataset.for = '';
      }
      if (!other) remoteHolder.textContent = waiting ? 'Your patient is in the waiting room.' : 'Your patient hasn’t joined yet.';
    }
    if (other) remoteName.textContent = other.name || remoteName.textContent;
    // Nobody there: a weak link shown for whoever left no longer applies.
    if (!other) remoteWeak.hidden = true;
    if (!other && !clinician) remoteHolder.textContent = `${otherName || 'Your clinician'} will be here soon.`;
  }

  let reconnectedTimer = null;
  function setPhase(phase) {
    room.dataset.phase = phase;
    document.body.dataset.state = phase === 'waiting' ? 'waiting' : 'call';
    document.title = phase === 'waiting' ? 'Waiting room · Video visit' : 'In call · Video visit';
  }

  call.emit = (type, detail) => {
    switch (type) {
      case 'joined':
        if (detail.resumed) return;
        setPhase(detail.waiting ? 'waiting' : 'call');
        focusHeading(detail.waiting ? waitingCard : room);
        announce(detail.waiting ? 'You are in the waiting room.' : 'You joined the visit.');
        return;
      case 'admitted':
        setPhase('call');
        announce(`${otherName || 'The clinician'} let you in. You are now in the visit.`);
        focusHeading(room);
        return;
      case 'roster': showRoster(detail); return;
      case 'peer-quality': {
        const words = { poor: 'Weak connection', lost: 'Connection lost' }[detail.quality];
        const was = remoteWeak.hidden ? null : remoteWeak.textContent;
        remoteWeak.hidden = !words;
        remoteTile.dataset.link = detail.quality;
        if (words && words !== was) {
          remoteWeak.textContent = words;
          announce(detail.quality === 'lost'
            ? `${remoteName.textContent}’s connection was lost.`
            : `${remoteName.textContent}’s connection is weak.`);
        }
        return;
      }
      case 'speaker':
        selfSpeaking.hidden = detail !== call.me;
        remoteSpeaking.hidden = !detail || detail === call.me;
        selfTile.classList.toggle('active-speaker', !selfSpeaking.hidden);
        remoteTile.classList.toggle('active-speaker', !remoteSpeaking.hidden);
        return;
      case 'remote': showRemote(detail); return;
      case 'local': showSelf(); return;
      case 'screen':
        share.setAttribute('aria-pressed', String(detail));
        share.classList.toggle('on', detail);
        setControl(share, 'screen', 'Share screen');
        announce(detail ? 'You are sharing your screen.' : 'You stopped sharing your screen.');
        return;
      case 'quality':
        quality.dataset.level = detail;
        quality.querySelector('.quality-text').textContent = QUALITY_WORDS[detail];
        return;
      case 'media':
        // An Amazon Chime meeting's state (connecting, connected, reconnecting, failed).
        room.dataset.media = detail;
        return;
      case 'connected':
        if (quality.dataset.level === 'good') quality.querySelector('.quality-text').textContent = QUALITY_WORDS.good;
        return;
      case 'reconnecting':
        clearTimeout(reconnectedTimer);
        banner.hidden = false;
        banner.dataset.kind = 'warn';
        banner.textContent = detail === 'signaling'
          ? 'Your connection dropped. Reconnecting… please keep this page open.'
          : 'The video connection was interrupted. Reconnecting…';
        quality.dataset.level = 'reconnecting';
        quality.querySelector('.quality-text').textContent = QUALITY_WORDS.reconnecting;
        return;
      case 'reconnected':
        banner.dataset.kind = 'ok';
        banner.textContent = 'You’re reconnected.';
        quality.dataset.level = 'good';
        quality.querySelector('.quality-text').textContent = QUALITY_WORDS.good;
        reconnectedTimer = setTimeout(() => { banner.hidden = true; }, 4000);
        return;
      case 'ended':
        stopLevel();
        onFinish(detail);
        return;
      default:
    }
  };
}
