// The "Schedule a visit" form (admin and scheduler keys).

import { h, announce } from '../lib/dom.js';
import { post } from '../lib/api.js';
import { refusal } from './visits.js';

function field(id, label, input, hint) {
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

/** Localised "YYYY-MM-DDTHH:MM" for a datetime-local input, `minutes` from now. */
function localInput(minutes) {
  const at = new Date(Date.now() + minutes * 60000);
  at.setSeconds(0, 0);
  const pad = (n) => String(n).padStart(2, '0');
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}

/** The form; `onDone()` after a visit was created. */
export function scheduleForm(key, onDone) {
  const clinician = h('input', { type: 'text', required: true, autocomplete: 'off' });
  const when = h('input', { type: 'datetime-local', required: true, value: localInput(5) });
  const duration = h('input', { type: 'number', min: 5, max: 240, value: 20, required: true });
  const name = h('input', { type: 'text', required: true, autocomplete: 'off' });
  const phone = h('input', { type: 'tel', autocomplete: 'off', placeholder: '+15551234567' });
  const email = h('input', { type: 'email', autocomplete: 'off' });
  const complaint = h('input', { type: 'text', autocomplete: 'off' });
  const waiting = h('input', { type: 'checkbox', checked: true, id: 'schedule-waiting' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const form = h('form', { class: 'schedule', novalidate: true },
    field('schedule-clinician', 'Clinician ID', clinician, 'The staff id of the clinician.'),
    field('schedule-when', 'Date and time', when),
    field('schedule-duration', 'Length (minutes)', duration),
    field('schedule-name', 'Patient name', name),
    field('schedule-phone', 'Patient mobile (optional)', phone),
    field('schedule-email', 'Patient email (optional)', email),
    h('div', { class: 'wide' }, field('schedule-complaint', 'Reason for visit (optional)', complaint)),
    h('div', { class: 'field checkbox wide' }, waiting, h('label', { for: 'schedule-waiting' }, 'Use the waiting room (the clinician admits the patient)')),
    h('div', { class: 'wide' }, error, h('button', { type: 'submit', class: 'primary' }, 'Schedule visit')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    const patient = { name: name.value.trim() };
    if (phone.value.trim()) patient.phone = phone.value.trim();
    if (email.value.trim()) patient.email = email.value.trim();
    const body = {
      clinician_id: clinician.value.trim(),
      scheduled_at: new Date(when.value).toISOString(),
      duration_minutes: Number(duration.value),
      patient,
      waiting_room: waiting.checked,
    };
    if (complaint.value.trim()) body.chief_complaint = complaint.value.trim();
    const answer = await post('/api/visits', body, key);
    if (!answer.ok) {
      const fields = answer.data && answer.data.errors;
      error.textContent = fields && fields.length
        ? fields.map((f) => `${f.field}: ${f.message}`).join('; ')
        : refusal(answer);
      error.hidden = false;
      return;
    }
    form.reset();
    when.value = localInput(5);
    announce('Visit scheduled');
    onDone();
  });
  return form;
}
