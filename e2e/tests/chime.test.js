// A Chime-backed visit in real Chromium against a real `bedside serve` whose Chime SDK
// Meetings API is a local fake (lib/chime-fake.js), with the real amazon-chime-sdk-js bundle
// built from web/chime/ (npm ci + esbuild, a few seconds once the packages are there).
//
// What is real: the page's choice of backend from the start answer, loading the bundle, the
// waiting room and admit over Bedside's signaling, the visit's status, the Chime SDK's
// meeting session built from the answer's meeting and attendee, and DeleteMeeting when the
// clinician ends the visit. What cannot be: Chime's media servers — the fake's media placement
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
import { launch, open, capture, assertClean } from '../lib/browser.js';

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
  await page.waitForFunction(() => !document.querySelector('button.primary.big').disabled, null, { timeout: 10000 });
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
  const phase = (page) => page.evaluate(() => document.querySelector('.room')?.dataset.media);
  let signalingUrl;

  await t.test('the clinician joins and its page starts the meeting of the start answer', async () => {
    await doctor.goto(links.clinician.url);
    await doctor.waitForFunction(() => !document.querySelector('button.primary.big').disabled, null, { timeout: 10000 });
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
    await patient.waitForFunction(() => !document.querySelector('button.primary.big').disabled, null, { timeout: 10000 });
    await patient.getByRole('button', { name: 'Join' }).click();
    await patient.getByRole('heading', { name: 'You’re in the waiting room' }).waitFor();
    await doctor.getByRole('button', { name: 'Admit' }).waitFor();
    await patient.waitForTimeout(1000);
    assert.ok(patientSockets.some((u) => u.endsWith('/ws')), 'the patient holds a signaling seat');
    assert.ok(!patientSockets.some((u) => u.includes('chime.aws')), `no Chime connection while waiting: ${patientSockets}`);
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
