// The join page's simple states: a title, plain words, and what to do next.

import { h, clock, countdown } from '../lib/dom.js';

const CONTACT = 'Please contact the clinic that sent you the link. They can send you a new one.';

/** Words for each state a link can be in, keyed by the API's problem codes where they exist. */
export const MESSAGES = {
  link_invalid: {
    title: 'This link isn’t valid',
    body: ['We couldn’t find a visit for this link. Check that you opened the whole link from your text or email message — sometimes the end gets cut off.', CONTACT],
  },
  link_expired: {
    title: 'This link has expired',
    body: ['Links work only around the time of the visit, and this one’s time has passed.', CONTACT],
  },
  link_used: {
    title: 'This link was already used',
    body: [
      'It was already opened on another device or browser. To keep your visit private, each link works on one device only.',
      'If you started on another device, go back to it. If that wasn’t you, or you need to switch devices, contact the clinic for a new link.',
    ],
  },
  visit_cancelled: {
    title: 'This visit was cancelled',
    body: ['There is nothing to join. If you think this is a mistake, contact the clinic.'],
  },
  visit_ended: {
    title: 'This visit has ended',
    body: ['Thank you. You can close this page now.'],
  },
  rate_limited: {
    title: 'Too many tries',
    body: ['Please wait a minute, then try again.'],
    retry: true,
  },
  network: {
    title: 'We can’t reach the clinic right now',
    body: ['Check that you are connected to the internet (Wi-Fi or mobile data), then try again.'],
    retry: true,
  },
  trouble: {
    title: 'Something went wrong',
    body: ['This is not your fault. Please try again in a moment.'],
    retry: true,
  },
  chime_missing: {
    title: 'Video for this visit isn’t set up',
    body: [
      'This visit uses a video service that this clinic’s server is not ready for yet. This is not your fault.',
      'Please contact the clinic and tell them the video page could not start. You can try again later with the same link on this device.',
    ],
    retry: true,
  },
  unsupported: {
    title: 'This browser can’t do video visits',
    body: ['Please open your link in a recent version of Chrome, Safari, Edge or Firefox.'],
  },
  ended: {
    title: 'Your visit has ended',
    body: ['Thank you for using video visits. You can close this page now.'],
  },
  left: {
    title: 'You left the visit',
    body: ['If you left by mistake, you can join again while the visit is still going.'],
    rejoin: true,
  },
  removed: {
    title: 'The clinician ended your part of the visit',
    body: ['You can close this page now. If you have questions, contact the clinic.'],
  },
  replaced: {
    title: 'Your visit continues in another window',
    body: ['This visit was opened in another tab or window on this device, so this page stopped. You can close it.'],
  },
  error: {
    title: 'The call stopped unexpectedly',
    body: ['This is not your fault. Try joining again.'],
    rejoin: true,
  },
};

/** The view for `key` in MESSAGES; `onRetry` backs a "Try again" / "Join again" button. */
export function messageView(key, { onRetry, extra } = {}) {
  const message = MESSAGES[key] || MESSAGES.trouble;
  const button = (message.retry || message.rejoin) && onRetry
    ? h('button', { class: 'primary', type: 'button', onclick: onRetry }, message.rejoin ? 'Join again' : 'Try again')
    : null;
  return h('section', { class: 'card center message' },
    h('div', { class: `emblem emblem-${message.rejoin || key === 'ended' || key === 'visit_ended' ? 'calm' : 'info'}`, 'aria-hidden': 'true' }),
    h('h1', {}, message.title),
    message.body.map((text) => h('p', {}, text)),
    extra || null,
    button);
}

/** The loading view. */
export function loadingView(text = 'Checking your link…') {
  return h('section', { class: 'card center' },
    h('div', { class: 'spinner', 'aria-hidden': 'true' }),
    h('h1', {}, text),
    h('p', {}, 'This takes a moment.'));
}

/**
 * "You're early" with a live countdown to `availableAt`; calls `onOpen` when it reaches zero.
 * Returns the view; the countdown stops once the view leaves the page.
 */
export function tooEarlyView(availableAt, visit, onOpen) {
  const opens = new Date(availableAt);
  const timer = h('p', { class: 'countdown', role: 'timer', 'aria-live': 'off' });
  const who = visit && visit.clinician_first_name ? ` with ${visit.clinician_first_name}` : '';
  const starts = visit ? h('p', {}, `Your visit${who} is at ${clock(new Date(visit.scheduled_at))}.`) : null;
  const view = h('section', { class: 'card center message' },
    h('div', { class: 'emblem emblem-clock', 'aria-hidden': 'true' }),
    h('h1', {}, 'You’re a little early'),
    starts,
    h('p', {}, `You can join from ${clock(opens)}. Keep this page open — it will get ready by itself.`),
    h('p', { class: 'countdown-label' }, 'Opens in'),
    timer);
  const tick = () => {
    if (!view.isConnected && timer.textContent) return;
    const left = (opens.getTime() - Date.now()) / 1000;
    timer.textContent = countdown(left);
    timer.setAttribute('aria-label', `Opens in ${countdown(left)}`);
    if (left <= 0) {
      onOpen();
      return;
    }
    setTimeout(tick, 1000 - (Date.now() % 1000) + 5);
  };
  tick();
  return view;
}
