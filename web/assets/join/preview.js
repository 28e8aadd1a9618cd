// The device preview: a mirrored self-view, a live microphone level, camera / microphone /
// speaker selectors, and help when the browser says no. Join is enabled once a device works.

import { h, clock } from '../lib/dom.js';
import {
  canPickSpeaker, fillSelect, listDevices, missingSupport, openDevices, openTrack,
  rememberDevices, rememberedDevices, watchLevel,
} from '../lib/devices.js';

const HELP = {
  denied: {
    title: 'Your browser is blocking the camera and microphone',
    steps: [
      'Look for a camera icon or a lock icon in the address bar at the top of the screen and tap it.',
      'Choose “Allow” for the camera and the microphone.',
      'On an iPhone or iPad: open Settings › Safari › Camera and Microphone, and choose “Allow”.',
      'Then press “Try again” below.',
    ],
  },
  'no-devices': {
    title: 'We couldn’t find a camera or microphone',
    steps: ['Plug in a headset or webcam, or open your link on a phone or tablet.', 'Then press “Try again” below.'],
  },
  'in-use': {
    title: 'Your camera or microphone is busy',
    steps: ['Another app (such as Zoom, Teams or FaceTime) may be using it. Close that app.', 'Then press “Try again” below.'],
  },
  other: {
    title: 'We couldn’t start your camera or microphone',
    steps: ['Close other apps that use the camera, then press “Try again” below.'],
  },
};

const NOTES = {
  'no-camera': 'We couldn’t find a camera. You can still join with audio only.',
  'no-microphone': 'We couldn’t find a microphone, so the other person won’t hear you. Plug in a headset if you can — you can still join with video.',
};

/**
 * Shows the preview in `container` and resolves nothing; `onJoin({stream, devices, speaker})`
 * is called when Join is pressed.
 */
export function runPreview(container, { visit, role, onJoin }) {
  const who = visit.clinician_first_name;
  const heading = role === 'clinician' ? 'Ready to see your patient?' : `Get ready for your visit${who ? ` with ${who}` : ''}`;
  const selfVideo = h('video', { class: 'mirror', autoplay: true, muted: true, playsInline: true, 'aria-label': 'Your camera preview' });
  const cameraOff = h('div', { class: 'placeholder', hidden: true }, 'No camera');
  const meter = h('meter', { class: 'level', min: 0, max: 1, low: 0.1, high: 0.9, optimum: 0.5, value: 0, id: 'mic-level' });
  const meterHint = h('p', { class: 'hint' }, 'Say something — the bar should move.');
  const camera = h('select', { id: 'camera-select' });
  const microphone = h('select', { id: 'microphone-select' });
  const speaker = h('select', { id: 'speaker-select' });
  const field = (id, label, select) => h('div', { class: 'field', 'data-for': id }, h('label', { for: id }, label), select);
  const fields = h('div', { class: 'fields' },
    field('camera-select', 'Camera', camera),
    field('microphone-select', 'Microphone', microphone),
    field('speaker-select', 'Speaker', speaker));
  const help = h('div', { class: 'help', role: 'alert', hidden: true });
  const note = h('p', { class: 'note', hidden: true });
  const join = h('button', { class: 'primary big', type: 'button', disabled: true }, 'Join');
  const joinHint = h('p', { class: 'hint', id: 'join-hint' }, 'Checking your camera and microphone…');
  join.setAttribute('aria-describedby', 'join-hint');
  const when = visit.scheduled_at ? h('p', { class: 'lede' }, `Scheduled for ${clock(new Date(visit.scheduled_at))}. Check that you can see and hear yourself, then press Join.`) : null;

  const view = h('section', { class: 'card preview' },
    h('h1', {}, heading),
    when,
    h('div', { class: 'preview-grid' },
      h('div', { class: 'self-preview tile' }, selfVideo, cameraOff),
      h('div', { class: 'preview-side' },
        h('div', { class: 'field' }, h('label', { for: 'mic-level' }, 'Microphone level'), meter, meterHint),
        fields,
        help,
        note,
        join,
        joinHint,
        h('p', { class: 'privacy' }, 'Your video is private: it goes only to the people in this visit and is never recorded.'))));
  container.replaceChildren(view);

  let stream = null;
  let stopMeter = () => {};
  let present = { audio: false, video: false };
  const choice = rememberedDevices();

  const missing = missingSupport();
  if (missing.length > 0) {
    showHelp('This browser can’t do video visits', [`It lacks ${missing.join(', ')}.`, 'Please open your link in a recent version of Chrome, Safari, Edge or Firefox.'], false);
    joinHint.textContent = 'Join is not available in this browser.';
    fields.hidden = true;
    return () => {};
  }

  function showHelp(title, steps, retry) {
    help.replaceChildren(
      h('h2', {}, title),
      h('ol', {}, steps.map((s) => h('li', {}, s))),
      retry ? h('button', { type: 'button', class: 'secondary', onclick: start }, 'Try again') : null);
    help.hidden = false;
  }

  function attach() {
    const video = stream.getVideoTracks()[0];
    const audio = stream.getAudioTracks()[0];
    selfVideo.srcObject = video ? new MediaStream([video]) : null;
    cameraOff.hidden = !!video;
    stopMeter();
    stopMeter = watchLevel(audio, (level) => { meter.value = level; });
    meter.closest('.field').hidden = !audio;
  }

  async function refreshLists() {
    const lists = await listDevices();
    fillSelect(camera, lists.videoinput, stream.getVideoTracks()[0]?.getSettings().deviceId, 'Camera');
    fillSelect(microphone, lists.audioinput, stream.getAudioTracks()[0]?.getSettings().deviceId, 'Microphone');
    fillSelect(speaker, lists.audiooutput, choice.speaker, 'Speaker');
    fields.querySelector('[data-for="camera-select"]').hidden = lists.videoinput.length < 1 || !present.video;
    fields.querySelector('[data-for="microphone-select"]').hidden = lists.audioinput.length < 1 || !present.audio;
    fields.querySelector('[data-for="speaker-select"]').hidden = !canPickSpeaker() || lists.audiooutput.length < 1;
  }

  async function swap(kind, deviceId) {
    const old = kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
    try {
      const track = await openTrack(kind, deviceId);
      if (old) {
        old.stop();
        stream.removeTrack(old);
      }
      stream.addTrack(track);
      choice[kind === 'video' ? 'camera' : 'microphone'] = deviceId;
      rememberDevices(choice);
      attach();
    } catch {
      note.textContent = 'That device didn’t start. Pick another one.';
      note.hidden = false;
    }
  }

  camera.addEventListener('change', () => swap('video', camera.value));
  microphone.addEventListener('change', () => swap('audio', microphone.value));
  speaker.addEventListener('change', () => {
    choice.speaker = speaker.value;
    rememberDevices(choice);
  });

  async function start() {
    help.hidden = true;
    note.hidden = true;
    join.disabled = true;
    joinHint.textContent = 'Checking your camera and microphone…';
    const opened = await openDevices(choice);
    if (!opened.stream) {
      const text = HELP[opened.problem] || HELP.other;
      showHelp(text.title, text.steps, true);
      joinHint.textContent = 'Join will be ready once your camera or microphone works.';
      fields.hidden = true;
      return;
    }
    stream = opened.stream;
    present = { audio: stream.getAudioTracks().length > 0, video: stream.getVideoTracks().length > 0 };
    if (NOTES[opened.problem]) {
      note.textContent = NOTES[opened.problem];
      note.hidden = false;
    }
    fields.hidden = false;
    attach();
    await refreshLists();
    join.disabled = false;
    joinHint.textContent = present.video ? 'You look ready.' : 'You will join with audio only.';
  }

  join.addEventListener('click', () => {
    if (!stream) return;
    join.disabled = true;
    joinHint.textContent = 'Joining…';
    stopMeter();
    onJoin({ stream, devices: present, speaker: choice.speaker });
  });

  start();
  return () => stopMeter();
}
