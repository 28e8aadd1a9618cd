// Join pressed → first remote frame, over N joins (default 20), in Chromium against a real
// `bedside serve` on loopback. Each join is a fresh visit without a waiting room: the
// clinician is already in the call, the patient previews, presses Join, and the time until
// the clinician's video presents its first frame on the patient's page is recorded.
// Usage: node measure.js [N] [udp|tcp|relay-udp|relay-tcp|relay-tls]
// `relay-*`: `turn.policy = "relay"` through a coturn on loopback (lib/coturn.js), reached
// over that TURN transport; `udp` (the default): straight to the SFU; `tcp`: straight to the
// SFU's ICE-TCP port, the only transport it announces (`sfu.transports = ["tcp"]`).

import { startServer } from './lib/server.js';
import { client } from './lib/api.js';
import { launch, open, armFirstFrame, firstFrameMs } from './lib/browser.js';
import { startCoturn } from './lib/coturn.js';

const runs = Number(process.argv[2]) || 20;
const path = process.argv[3] || 'udp';
const relay = path.match(/^relay-(udp|tcp|tls)$/);
if (!['udp', 'tcp'].includes(path) && !relay) {
  throw new Error(`unknown path ${path}: use udp, tcp, relay-udp, relay-tcp or relay-tls`);
}
const coturn = relay ? await startCoturn() : null;
const server = await startServer({
  env: coturn ? {
    BEDSIDE_TURN__URLS: JSON.stringify([coturn.urls[relay[1]]]),
    BEDSIDE_TURN__SHARED_SECRET: coturn.secret,
    BEDSIDE_TURN__POLICY: 'relay',
  } : path === 'tcp' ? { BEDSIDE_SFU__TRANSPORTS: '["tcp"]' } : {},
});
const browser = await launch({ args: coturn ? [`--ignore-certificate-errors-spki-list=${coturn.spki}`] : [] });
const api = client(server.base);
const ready = (page) => page.waitForFunction(() => {
  const join = document.querySelector('button.primary.big');
  return join && !join.disabled;
}, null, { timeout: 15000 });

try {
  const clinician = await api.clinician(server.adminKey);
  const samples = [];
  for (let i = 0; i < runs; i += 1) {
    const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
    const doctor = await open(browser);
    await doctor.goto(links.clinician.url);
    await ready(doctor);
    await doctor.getByRole('button', { name: 'Join' }).click();
    await doctor.waitForFunction(() => document.body.dataset.state === 'call');
    const patient = await open(browser);
    await patient.goto(links.patient.url);
    await ready(patient);
    await armFirstFrame(patient);
    await patient.getByRole('button', { name: 'Join' }).click();
    const ms = await firstFrameMs(patient);
    samples.push(ms);
    process.stdout.write(`join ${i + 1}: ${ms.toFixed(0)} ms\n`);
    await patient.context().close();
    await doctor.context().close();
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const pick = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  const result = {
    path, joins: runs, p50_ms: Math.round(pick(0.5)), p95_ms: Math.round(pick(0.95)),
    min_ms: Math.round(sorted[0]), max_ms: Math.round(sorted[sorted.length - 1]),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await browser.close();
  await server.stop();
  if (coturn) await coturn.stop();
}
