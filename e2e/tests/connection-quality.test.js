// The other participant's connection, as the server sees it (`connection_quality`), in real
// Chromium: a visit on UDP whose patient's media path is cut (nftables drops the UDP between the
// SFU's port and every port but the clinician's, both ways; signaling stays up) shows "Weak connection" and
// then "Connection lost" on the clinician's view of the patient, announced; when the path is back the patient's page
// restarts ICE by itself and the notice goes away.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer } from '../lib/server.js';
import { client } from '../lib/api.js';
import { recordPeerConnections, selectedPair } from '../lib/peers.js';
import { launch, open, assertClean, joinReady, videoPlaying } from '../lib/browser.js';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
});

test('the clinician sees the patient’s connection lost and back', async () => {
  // UDP only, so that a cut UDP path stays cut instead of moving to ICE-TCP.
  const server = await startServer({ env: { BEDSIDE_SFU__TRANSPORTS: '["udp"]' } });
  const table = `bedside_quality_${process.pid}`;
  const nft = (...args) => execFileSync('nft', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const api = client(server.base);
    const clinician = await api.clinician(server.adminKey);
    const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
    const doctor = await open(browser);
    const patient = await open(browser);
    await recordPeerConnections(patient.context());
    await recordPeerConnections(doctor.context());
    for (const [page, link] of [[doctor, links.clinician.url], [patient, links.patient.url]]) {
      await page.goto(link);
      await joinReady(page);
      await page.getByRole('button', { name: 'Join' }).click();
      await page.waitForFunction(() => document.body.dataset.state === 'call');
    }
    await videoPlaying(doctor, 'video.remote-video');
    // Everything said to screen readers, in order: a later message replaces an earlier one in
    // the live region, and the patient's page may find a new path soon after "lost".
    await doctor.evaluate(() => {
      const region = document.querySelector('#announcer');
      window.__announced = [];
      new MutationObserver(() => {
        if (region.textContent) window.__announced.push(region.textContent);
      }).observe(region, { childList: true, characterData: true, subtree: true });
    });
    const notice = doctor.locator('.tile.remote .weak-link');
    assert.equal(await notice.isHidden(), true, 'a clean loopback link shows nothing');

    // Everything between the SFU's UDP port and the patient: every UDP port but the
    // clinician's. Cutting only the patient's own ports is not enough, since its page's ICE
    // restart gathers new ones and may come back before the server gives the session up.
    const { remote } = await selectedPair(patient);
    const doctorPorts = await doctor.evaluate(async () => {
      const stats = await window.__peerConnections.at(-1).getStats();
      return [...new Set([...stats.values()]
        .filter((r) => r.type === 'local-candidate' && r.protocol === 'udp')
        .map((r) => String(r.port)))];
    });
    assert.ok(doctorPorts.length > 0, 'the clinician gathered UDP candidates');
    const others = `{ ${doctorPorts.join(', ')} }`;
    nft('add', 'table', 'inet', table);
    for (const hook of ['input', 'output']) {
      nft('add', 'chain', 'inet', table, hook, `{ type filter hook ${hook} priority 0; }`);
      nft('add', 'rule', 'inet', table, hook, 'udp', 'sport', String(remote.port), 'udp', 'dport', '!=', others, 'drop');
      nft('add', 'rule', 'inet', table, hook, 'udp', 'dport', String(remote.port), 'udp', 'sport', '!=', others, 'drop');
    }
    // Poor first (everything it sends is lost), then lost once ICE gives the session up.
    await notice.waitFor({ state: 'visible', timeout: 30000 });
    await doctor.waitForFunction(
      () => document.querySelector('.tile.remote').dataset.link === 'lost',
      null,
      { timeout: 30000 },
    );
    assert.equal(await notice.textContent(), 'Connection lost');
    await doctor.waitForFunction(
      () => window.__announced.some((text) => text.includes('connection was lost')),
      null,
      { timeout: 5000 },
    );

    nft('delete', 'table', 'inet', table);
    await notice.waitFor({ state: 'hidden', timeout: 45000 });
    const link = await doctor.locator('.tile.remote').getAttribute('data-link');
    assert.ok(['excellent', 'good'].includes(link), `back to ${link}`);
    await videoPlaying(doctor, 'video.remote-video');
    assertClean(patient);
    assertClean(doctor);
    await patient.context().close();
    await doctor.context().close();
  } finally {
    try { nft('delete', 'table', 'inet', table); } catch { /* already gone */ }
    await server.stop();
  }
});
