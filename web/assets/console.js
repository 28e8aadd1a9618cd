// The console at /console: sign in with an API key (kept in this tab's sessionStorage only),
// today's and upcoming visits, scheduling, links, notifications, start and end. Patient
// details appear on screen only — never in the title, the URL or the browser console.

import { h, replace, announce, focusHeading } from './lib/dom.js';
import { get, post } from './lib/api.js';
import { openDevices } from './lib/devices.js';
import { openCall } from './lib/media.js';
import { runRoom } from './join/room.js';
import { visitItem, refusal } from './console/visits.js';
import { scheduleForm } from './console/schedule.js';

const KEY = 'bedside.apiKey';
const main = document.getElementById('main');
const account = document.getElementById('account');
const UPCOMING_DAYS = 14;

function signIn(message) {
  account.replaceChildren();
  const input = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', required: true, spellcheck: false });
  const error = h('p', { class: 'error', role: 'alert', hidden: !message }, message || '');
  const form = h('form', { class: 'card signin' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'lede' }, 'Paste your Bedside API key. It stays in this browser tab only and is forgotten when you close it.'),
    h('div', { class: 'field' }, h('label', { for: 'api-key' }, 'API key'), input),
    error,
    h('button', { type: 'submit', class: 'primary big' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    const answer = await get('/api/visits?limit=1', key);
    if (!answer.ok) {
      error.textContent = answer.status === 401 ? 'That key was not accepted.' : refusal(answer);
      error.hidden = false;
      input.focus();
      return;
    }
    sessionStorage.setItem(KEY, key);
    home();
  });
  main.replaceChildren(form);
  input.focus();
}

function signOutButton() {
  return h('button', {
    type: 'button',
    class: 'secondary',
    onclick: () => {
      sessionStorage.removeItem(KEY);
      signIn();
    },
  }, 'Sign out');
}

async function home() {
  const key = sessionStorage.getItem(KEY);
  if (!key) return signIn();
  document.title = 'Console · Bedside';
  document.body.dataset.state = 'console';
  account.replaceChildren(signOutButton());
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  const tomorrow = new Date(today.getTime() + 86400000);
  const until = new Date(today.getTime() + UPCOMING_DAYS * 86400000);
  const query = new URLSearchParams({ from: today.toISOString(), to: until.toISOString(), limit: '100' });
  const answer = await get(`/api/visits?${query}`, key);
  if (!answer.ok) {
    if (answer.status === 401) {
      sessionStorage.removeItem(KEY);
      return signIn('Your key is no longer accepted. Sign in again.');
    }
    return replace(main, h('section', { class: 'card' }, h('h1', {}, 'Visits'), h('p', { class: 'error' }, refusal(answer))));
  }
  const visits = answer.data.items;
  const handlers = { onStart: (visit, fail) => startVisit(visit, key, fail), onChanged: home };
  const list = (items, empty) => (items.length
    ? h('ul', { class: 'visits' }, items.map((v) => visitItem(v, key, handlers)))
    : h('p', { class: 'lede' }, empty));
  const todays = visits.filter((v) => new Date(v.scheduled_at) < tomorrow);
  const later = visits.filter((v) => new Date(v.scheduled_at) >= tomorrow);
  const form = scheduleForm(key, home);
  form.hidden = true;
  const toggle = h('button', { type: 'button', class: 'secondary', 'aria-expanded': 'false', 'aria-controls': 'schedule' }, 'Schedule a visit');
  form.id = 'schedule';
  toggle.addEventListener('click', () => {
    form.hidden = !form.hidden;
    toggle.setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) form.querySelector('input').focus();
  });
  replace(main,
    h('section', { class: 'card' },
      h('div', { class: 'toolbar' }, h('h1', {}, 'Visits'), h('div', {}, toggle, ' ', h('button', { type: 'button', class: 'secondary', onclick: home }, 'Refresh'))),
      form),
    h('section', { class: 'card', 'aria-labelledby': 'today-heading' },
      h('h2', { id: 'today-heading' }, 'Today'), list(todays, 'No visits today.')),
    h('section', { class: 'card', 'aria-labelledby': 'upcoming-heading' },
      h('h2', { id: 'upcoming-heading' }, `Next ${UPCOMING_DAYS} days`), list(later, 'No upcoming visits.')));
  focusHeading(main);
  return undefined;
}

async function startVisit(visit, key, fail) {
  const opened = await openDevices();
  if (!opened.stream) {
    fail({ code: 'devices' });
    announce('Your camera and microphone could not start.');
    return;
  }
  const first = await post(`/api/visits/${visit.id}/start-authenticated`, {}, key);
  if (!first.ok) {
    for (const track of opened.stream.getTracks()) track.stop();
    fail(first);
    return;
  }
  let pending = first.data;
  const start = async () => {
    if (pending) {
      const answer = pending;
      pending = null;
      return answer;
    }
    const again = await post(`/api/visits/${visit.id}/start-authenticated`, {}, key);
    if (!again.ok) throw again;
    return again.data;
  };
  const stream = opened.stream;
  let call;
  let answer;
  try {
    // The SFU, or for a Chime visit the Chime SDK bundle, by the answer's `media.backend`.
    ({ call, answer } = await openCall({
      start,
      stream,
      devices: { audio: stream.getAudioTracks().length > 0, video: stream.getVideoTracks().length > 0 },
    }));
  } catch (problem) {
    for (const track of stream.getTracks()) track.stop();
    fail(problem);
    return;
  }
  document.body.dataset.state = 'joining';
  runRoom(main, { call, role: 'clinician', otherName: null, speaker: null, onFinish: () => home() });
  call.enter(answer).catch(() => home());
}

home();
