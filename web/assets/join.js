// The join page at /j/{code}: Loading → Invalid / Expired / Already used / Too early →
// Preview → Waiting room → In call → Ended. The code is read from the path and sent only to
// the API (in request bodies); nothing about the patient ever enters the URL or the title.

import { post } from './lib/api.js';
import { announce, focusHeading } from './lib/dom.js';
import { openDevices, rememberedDevices } from './lib/devices.js';
import { openCall } from './lib/media.js';
import { loadingView, messageView, tooEarlyView, MESSAGES } from './join/states.js';
import { runPreview } from './join/preview.js';
import { runRoom } from './join/room.js';

const main = document.getElementById('main');
const code = decodeURIComponent(location.pathname.split('/')[2] || '');
/** Set while this tab holds a seat, so a reload goes straight back into the call. */
const IN_CALL_KEY = 'bedside.inCall';

const TITLES = {
  loading: 'Video visit',
  preview: 'Get ready · Video visit',
  too_early: 'Too early · Video visit',
};

function show(state, view) {
  document.body.dataset.state = state;
  document.title = TITLES[state] || (MESSAGES[state] ? `${MESSAGES[state].title} · Video visit` : 'Video visit');
  main.replaceChildren(view);
  focusHeading(main);
}

function problem(answer, visit) {
  const key = answer.code === 'too_early' ? 'too_early' : answer.code;
  if (key === 'too_early') {
    show('too_early', tooEarlyView(answer.data.available_at, visit, check));
    return;
  }
  const known = MESSAGES[key] ? key : 'trouble';
  show(known, messageView(known, { onRetry: check }));
}

async function check() {
  show('loading', loadingView());
  const answer = await post('/api/token/redeem', { code });
  if (!answer.ok) {
    problem(answer, null);
    return;
  }
  const { visit, role } = answer.data;
  if (sessionStorage.getItem(IN_CALL_KEY) === visit.id) {
    // A reload mid-call: back in without the preview, with the devices chosen before.
    const opened = await openDevices(rememberedDevices());
    if (opened.stream) {
      enter(visit, role, {
        stream: opened.stream,
        devices: { audio: opened.stream.getAudioTracks().length > 0, video: opened.stream.getVideoTracks().length > 0 },
        speaker: rememberedDevices().speaker,
      });
      return;
    }
  }
  show('preview', document.createElement('div'));
  runPreview(main, { visit, role, onJoin: (media) => enter(visit, role, media) });
  focusHeading(main);
}

async function enter(visit, role, { stream, devices, speaker }) {
  const start = async () => {
    const answer = await post(`/api/visits/${encodeURIComponent(visit.id)}/start`, { code });
    if (!answer.ok) throw answer;
    return answer.data;
  };
  let opened;
  try {
    // Starts the visit, then picks the SFU or, for a Chime visit, loads the Chime SDK.
    opened = await openCall({ start, stream, devices });
  } catch (answer) {
    for (const track of stream.getTracks()) track.stop();
    if (answer && answer.code) problem(answer, visit);
    else show('error', messageView('error', { onRetry: check }));
    announce('Joining did not work.');
    return;
  }
  const { call, answer } = opened;
  document.body.dataset.state = 'joining';
  runRoom(main, {
    call,
    role,
    otherName: visit.clinician_first_name,
    speaker,
    onFinish: (reason) => {
      sessionStorage.removeItem(IN_CALL_KEY);
      show(reason, messageView(reason, { onRetry: check }));
    },
  });
  call.enter(answer).then(() => {
    sessionStorage.setItem(IN_CALL_KEY, visit.id);
  }, () => {
    for (const track of stream.getTracks()) track.stop();
    show('error', messageView('error', { onRetry: check }));
    announce('Joining did not work.');
  });
}

check();
