// One visit in the console list, with its actions: issue and copy links, send the patient's
// link, start (start-authenticated) and end.

import { h, announce, dayAndTime } from '../lib/dom.js';
import { post } from '../lib/api.js';

const STATUS_WORDS = {
  scheduled: 'Scheduled', waiting: 'Started', in_progress: 'In progress', ended: 'Ended', cancelled: 'Cancelled',
};

const REFUSALS = {
  forbidden: 'Your API key’s role can’t do that.',
  conflict: 'The visit is not in a state that allows that.',
  too_early: 'Too early: the visit opens 15 minutes before its time.',
  visit_ended: 'The visit has ended.',
  visit_cancelled: 'The visit was cancelled.',
  rate_limited: 'Too many requests; wait a moment.',
  network: 'The server can’t be reached.',
  devices: 'Your camera and microphone could not start.',
  chime_missing: 'This visit uses Amazon Chime, and this server has no Chime SDK bundle (see web/chime/README.md).',
};

export const refusal = (answer) => REFUSALS[answer.code] || `That didn’t work (${answer.code}).`;

async function copy(input, button) {
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand('copy');
  }
  button.textContent = 'Copied';
  announce('Link copied');
  setTimeout(() => { button.textContent = 'Copy'; }, 2000);
}

function linkRow(label, link, id) {
  const input = h('input', { id, type: 'text', readOnly: true, value: link.url });
  const button = h('button', { type: 'button', class: 'secondary' }, 'Copy');
  button.addEventListener('click', () => copy(input, button));
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    h('div', { class: 'link-row' }, input, button),
    h('span', { class: 'hint' }, `Works until ${dayAndTime(new Date(link.expires_at))}, on one device.`));
}

/** The list item for `visit`; `onStart(visit)` opens the call, `onChanged()` reloads. */
export function visitItem(visit, key, { onStart, onChanged }) {
  const when = new Date(visit.scheduled_at);
  const detail = h('div', { class: 'detail', 'aria-live': 'polite' });
  const fail = (answer) => detail.replaceChildren(h('p', { class: 'error' }, refusal(answer)));
  const live = visit.status !== 'ended' && visit.status !== 'cancelled';
  const who = visit.patient ? visit.patient.name : 'Patient';

  const links = h('button', { type: 'button', class: 'secondary' }, 'Issue links');
  links.addEventListener('click', async () => {
    const answer = await post(`/api/visits/${visit.id}/links`, {}, key);
    if (!answer.ok) return fail(answer);
    detail.replaceChildren(h('div', { class: 'links' },
      linkRow('Patient link', answer.data.patient, `patient-link-${visit.id}`),
      linkRow('Clinician link', answer.data.clinician, `clinician-link-${visit.id}`)));
    return announce('New links issued; earlier unused links no longer work.');
  });

  const notify = h('button', { type: 'button', class: 'secondary' }, 'Send link');
  notify.addEventListener('click', async () => {
    const channels = [];
    if (!visit.patient || visit.patient.phone) channels.push('sms');
    if (!visit.patient || visit.patient.email) channels.push('email');
    const answer = await post(`/api/visits/${visit.id}/notify`, { channels }, key);
    if (!answer.ok) return fail(answer);
    const sent = answer.data.notifications.map((n) => (n.channel === 'sms' ? 'text message' : 'email')).join(' and ');
    detail.replaceChildren(h('p', {}, `Queued: ${sent} to the patient.`));
    return announce('Notification queued');
  });

  const start = h('button', { type: 'button', class: 'primary' }, 'Start visit');
  start.addEventListener('click', () => onStart(visit, fail));

  const end = h('button', { type: 'button', class: 'danger' }, 'End visit');
  end.addEventListener('click', async () => {
    const answer = await post(`/api/visits/${visit.id}/end`, {}, key);
    if (!answer.ok) return fail(answer);
    announce('Visit ended');
    return onChanged();
  });

  return h('li', { class: 'visit' },
    h('div', {},
      h('h3', {}, `${dayAndTime(when)} · ${who}`),
      h('p', { class: 'meta' },
        h('span', { class: `status status-${visit.status}` }, STATUS_WORDS[visit.status] || visit.status),
        ` ${visit.duration_minutes} min`,
        visit.chief_complaint ? ` · ${visit.chief_complaint}` : '')),
    h('div', { class: 'actions' }, live ? [links, notify, start, visit.status === 'scheduled' ? null : end] : null),
    detail);
}
