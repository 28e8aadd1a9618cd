// A Chime-backed visit in real Chromium against a real `bedside serve` whose Chime SDK
// Meetings API is a local fake (lib/chime-fake.js), with the real amazon-chime-sdk-js bundle
// built from web/chime/ (npm ci + esbuild, a few seconds once the packages are there).
//
// What is real: the page's choice of backend from the start answer, loading the bundle, the
// waiting room and admit over Bedside's signaling, the waiting patient's JoinToken withheld
// from its start answer and handed over by signaling on admission, the visit's status, the
// Chime SDK's meeting session built from the answer's meeting and that attendee (its
// JoinToken is what the SDK offers Chime's signaling), and DeleteMeeting when the clinician
// ends the visit. What cannot be: Chime's media servers — the fake's media placement
// names *.chime.aws hosts that this browser resolves to nothing (--host-resolver-rules), so the
// test checks that the SDK tries the meeting's own SignalingUrl, and when, but no audio or
// video flows through Chime here.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../lib/server.js';
import { startChimeFake } from '../lib/chime-fake.js';
import { client } from '../lib/api.js';
import { launch, open, capture, assertClean, joinReady } from '../lib/browser.js';

const CHIME_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web', 'chime');
const BUNDLE = join(CHIME_DIR, 'dist', 'amazon-chime-sdk.js');

let fake;
let server;
let api;
let browser;
let clinician;

/** Builds web/chime/dist/ as an operator would (web/chime/README.md), unless it is there. */
function buildBundle() {
  if (existsSync(BUNDLE)) return;
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  if (!existsSync(join(CHIME_DIR, 'node_modules', 'amazon-chime-sdk-js'))) {
    execFileSync(npm, ['ci', '--no-audit', '--no-fund'], { cwd: CHIME_DIR, stdio: 'inherit' });
  }
  execFileSync(npm, ['run', 'build'], { cwd: CHIME_DIR, stdio: 'inherit' });
}

/** Every WebSocket URL `page` opens from now on (DNS failures included). */
function watchSockets(page) {
  const urls = [];
  page.on('websocket', (ws) => urls.push(ws.url()));
  return urls;
}

/** Every JSON frame `page` receives on Bedside's signaling socket from now on. */
function watchSignaling(page) {
  const frames = [];
  page.on('websocket', (ws) => {
    if (!ws.url().endsWith('/ws')) return;
    ws.on('framereceived', ({ payload }) => {
      try { frames.push(JSON.parse(payload)); } catch { /* not JSON */ }
    });
  });
  return frames;
}

/**
 * Records the subprotocols of every WebSocket the page's scripts open: the Chime SDK sends
 * the attendee's JoinToken as one (`['_aws_wt_session', JoinToken]`), which the browser's
 * own events do not show for a socket whose host does not resolve.
 */
async function recordSocketProtocols(page) {
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.socketProtocols = [];
    window.WebSocket = class extends Native {
      constructor(url, protocols) {
        window.socketProtocols.push({ url: String(url), protocols: protocols || [] });
        super(url, protocols);
      }
    };
  });
}

before(async () => {
  buildBundle();
  fake = await startChimeFake();
  server = await startServer({
    env: {
      // A node whose default stays the SFU but that may run Chime visits, against the fake.
      BEDSIDE_CHIME__ENABLED: 'true',
      BEDSIDE_CHIME__ENDPOINT_URL: fake.url,
      BEDSIDE_AWS__REGION: 'us-east-1',
      BEDSIDE_AWS__ENDPOINT_URL: fake.url,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_EC2_METADATA_DISABLED: 'true',
    },
  });
  api = client(server.base);
  browser = await launch({ args: ['--host-resolver-rules=MAP *.chime.aws ~NOTFOUND'] });
  clinician = await api.clinician(server.adminKey);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
  if (fake) await fake.stop();
});

test('a Chime visit on a node without the Chime SDK bundle says so instead of hanging', async () => {
  const { links } = await api.visit(server.adminKey, clinician.id, { mediaBackend: 'chime' });
  const page = await open(browser);
  await page.route('**/assets/chime/**', (route) => route.fulfill({ status: 404, body: 'Not found' }));
  await page.goto(links.patient.url);
  await joinReady(page);
  await page.getByRole('button', { name: 'Join' }).click();
  await page.getByRole('heading', { name: 'Video for this visit isn’t set up' }).waitFor();
  assert.ok(await page.getByRole('button', { name: 'Try again' }).isVisible());
  await capture(page, 'chime-missing');
  assertClean(page);
  await page.context().close();
});

test('a Chime visit: waiting room and admit on signaling, the meeting joined only once admitted', async (t) => {
  const { visit, links } = await api.visit(server.adminKey, clinician.id, { mediaBackend: 'chime' });
  assert.equal(visit.media_backend, 'chime');
  const patient = await open(browser);
  const doctor = await open(browser);
  const patientSockets = watchSockets(patient);
  const doctorSockets = watchSockets(doctor);
  const patientFrames = watchSignaling(patient);
  await recordSocketProtocols(patient);
  const phase = (page) => page.evaluate(() => document.querySelector('.room')?.dataset.media);
  let signalingUrl;

  await t.test('the clinician joins and its page starts the meeting of the start answer', async () => {
    await doctor.goto(links.clinician.url);
    await joinReady(doctor);
    await doctor.getByRole('button', { name: 'Join' }).click();
    await doctor.getByText('Your patient hasn’t joined yet.').waitFor();
    const [meeting] = [...fake.meetings.values()].filter((m) => m.ExternalMeetingId === visit.id);
    assert.ok(meeting, 'CreateMeeting was called with the visit as ExternalMeetingId');
    signalingUrl = meeting.MediaPlacement.SignalingUrl;
    await doctor.waitForFunction(() => document.querySelector('.room')?.dataset.media, null, { timeout: 10000 });
    assert.equal(await phase(doctor), 'connecting', 'the SDK cannot reach Chime here, so it stays connecting');
    const deadline = Date.now() + 10000;
    while (!doctorSockets.some((u) => u.startsWith(signalingUrl)) && Date.now() < deadline) {
      await doctor.waitForTimeout(100);
    }
    assert.ok(doctorSockets.some((u) => u.startsWith(`${server.base.replace('http', 'ws')}/ws`)), 'Bedside signaling');
    assert.ok(doctorSockets.some((u) => u.startsWith(signalingUrl)), `the meeting's SignalingUrl in ${doctorSockets}`);
  });

  await t.test('the patient waits on signaling and does not join the meeting yet', async () => {
    await patient.goto(links.patient.url);
    await joinReady(patient);
    const started = patient.waitForResponse((r) => r.url().endsWith(`/api/visits/${visit.id}/start`));
    await patient.getByRole('button', { name: 'Join' }).click();
    // The start answer names the attendee but withholds its JoinToken while the patient waits.
    const answer = await (await started).json();
    assert.equal(answer.media.backend, 'chime');
    assert.deepEqual(Object.keys(answer.media.attendee).sort(), ['AttendeeId', 'ExternalUserId']);
    assert.equal(answer.media.attendee.ExternalUserId, answer.participant_id);
    await patient.getByRole('heading', { name: 'You’re in the waiting room' }).waitFor();
    await doctor.getByRole('button', { name: 'Admit' }).waitFor();
    await patient.waitForTimeout(1000);
    assert.ok(patientSockets.some((u) => u.endsWith('/ws')), 'the patient holds a signaling seat');
    assert.ok(!patientSockets.some((u) => u.includes('chime.aws')), `no Chime connection while waiting: ${patientSockets}`);
    const joined = patientFrames.find((f) => f.type === 'joined');
    assert.equal(joined.waiting, true);
    assert.equal(joined.attendee, undefined, 'no JoinToken over signaling while waiting');
    assert.equal(await phase(patient), undefined);
    const waiting = await api.get(`/api/visits/${visit.id}`, server.adminKey);
    assert.equal(waiting.status, 'waiting');
    await capture(patient, 'chime-waiting-room');
    await capture(doctor, 'chime-clinician-admit');
  });

  await t.test('admitted, the patient joins the meeting and the visit is in progress', async () => {
    await doctor.getByRole('button', { name: 'Admit' }).click();
    await patient.waitForFunction(() => document.body.dataset.state === 'call', null, { timeout: 10000 });
    await patient.waitForFunction(() => document.querySelector('.room')?.dataset.media, null, { timeout: 10000 });
    const deadline = Date.now() + 10000;
    while (!patientSockets.some((u) => u.startsWith(signalingUrl)) && Date.now() < deadline) {
      await patient.waitForTimeout(100);
    }
    assert.ok(patientSockets.some((u) => u.startsWith(signalingUrl)), `the meeting's SignalingUrl in ${patientSockets}`);
    const meetingId = signalingUrl.slice(signalingUrl.lastIndexOf('/') + 1);
    // The admission brought the patient its attendee with the JoinToken — the one Chime gave
    // that participant — and the Chime SDK offers exactly that token to the meeting.
    const admitted = patientFrames.find((f) => f.type === 'participant_admitted');
    assert.ok(admitted, 'participant_admitted reached the patient');
    const held = fake.meetings.get(meetingId).attendees.get(admitted.participant);
    assert.deepEqual(admitted.attendee, held);
    const offered = await patient.evaluate(() => window.socketProtocols);
    const chimeSocket = offered.find((s) => s.url.startsWith(signalingUrl));
    assert.ok(chimeSocket, `the SDK opened the meeting's signaling: ${JSON.stringify(offered)}`);
    assert.deepEqual(chimeSocket.protocols, ['_aws_wt_session', held.JoinToken]);
    const attendees = fake.calls
      .filter((c) => c.operation === 'CreateAttendee' && c.meeting === meetingId)
      .map((c) => c.body.ExternalUserId);
    assert.equal(new Set(attendees).size, 2, 'one attendee per participant');
    let status;
    for (let i = 0; i < 30 && status !== 'in_progress'; i += 1) {
      status = (await api.get(`/api/visits/${visit.id}`, server.adminKey)).status;
      if (status !== 'in_progress') await patient.waitForTimeout(100);
    }
    assert.equal(status, 'in_progress');
    await capture(patient, 'chime-in-call-patient');
  });

  await t.test('the controls work on the Chime session', async () => {
    await patient.getByRole('button', { name: 'Mute' }).click();
    await patient.getByRole('button', { name: 'Unmute' }).click();
    await patient.getByRole('button', { name: 'Mute' }).waitFor();
    await patient.getByRole('button', { name: 'Stop video' }).click();
    await patient.getByRole('button', { name: 'Start video' }).waitFor();
    await patient.waitForFunction(() => document.querySelector('.tile.self').dataset.video === 'off');
    await patient.getByRole('button', { name: 'Start video' }).click();
    await patient.getByRole('button', { name: 'Stop video' }).waitFor();
    await patient.waitForFunction(() => document.querySelector('.tile.self').dataset.video === 'on');
  });

  await t.test('a reload of the admitted patient rejoins the meeting with the token from joined', async () => {
    const meetingId = signalingUrl.slice(signalingUrl.lastIndexOf('/') + 1);
    const before = patientFrames.length;
    const rejoined = patient.waitForResponse((r) => r.url().endsWith(`/api/visits/${visit.id}/start`));
    await patient.reload();
    const answer = await (await rejoined).json();
    assert.equal(answer.media.attendee.JoinToken, undefined, 'the rejoin answer withholds it too');
    await patient.waitForFunction(() => document.body.dataset.state === 'call', null, { timeout: 10000 });
    const joined = patientFrames.slice(before).find((f) => f.type === 'joined');
    assert.equal(joined.waiting, false, 'admitted once, not held again');
    const held = fake.meetings.get(meetingId).attendees.get(joined.participant);
    assert.deepEqual(joined.attendee, held);
    let offered = [];
    for (let i = 0; i < 100 && !offered.some((o) => o.url.startsWith(signalingUrl)); i += 1) {
      await patient.waitForTimeout(100);
      offered = await patient.evaluate(() => window.socketProtocols);
    }
    const chimeSocket = offered.find((o) => o.url.startsWith(signalingUrl));
    assert.ok(chimeSocket, `the SDK opened the meeting's signaling again: ${JSON.stringify(offered)}`);
    assert.deepEqual(chimeSocket.protocols, ['_aws_wt_session', held.JoinToken]);
  });

  await t.test('End visit ends both pages and deletes the meeting', async () => {
    await doctor.getByRole('button', { name: 'End visit' }).click();
    await doctor.getByRole('heading', { name: 'Your visit has ended' }).waitFor();
    await patient.getByRole('heading', { name: 'Your visit has ended' }).waitFor();
    const ended = await api.get(`/api/visits/${visit.id}`, server.adminKey);
    assert.equal(ended.status, 'ended');
    const meetingId = signalingUrl.slice(signalingUrl.lastIndexOf('/') + 1);
    for (let i = 0; i < 30 && !fake.calls.some((c) => c.operation === 'DeleteMeeting'); i += 1) {
      await patient.waitForTimeout(100);
    }
    assert.deepEqual(
      fake.calls.filter((c) => c.operation === 'DeleteMeeting').map((c) => c.meeting),
      [meetingId],
    );
    assertClean(patient);
    assertClean(doctor);
  });
  await patient.context().close();
  await doctor.context().close();
});
