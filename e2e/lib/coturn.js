// A real coturn `turnserver` on loopback, configured by docs/turnserver.conf — the file
// operators are told to use — with its `[site]` lines given loopback values: a random REST
// secret, UDP and TCP on one free port, TLS on another with a certificate made now (openssl),
// relay ports from a small random range. The Rust tests run the same file the same way
// (tests/common/coturn.rs).

import { spawn, execFileSync } from 'node:child_process';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CONF = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'turnserver.conf');
/** The keys of docs/turnserver.conf's `[site]` lines, which the tests set themselves. */
const SITE_KEYS = ['static-auth-secret', 'realm', 'listening-port', 'tls-listening-port', 'cert', 'pkey', 'min-port', 'max-port'];
const RELAY_PORTS = 200;
const START_WAIT_MS = 10000;

/**
 * `turnserver`: $BEDSIDE_TEST_TURNSERVER when set (./scripts/test sets it, so that a missing
 * one fails rather than skips), else the first on PATH; null when there is none.
 */
export function turnserverBinary() {
  if (process.env.BEDSIDE_TEST_TURNSERVER !== undefined) return process.env.BEDSIDE_TEST_TURNSERVER;
  const found = (process.env.PATH || '').split(delimiter).map((dir) => join(dir, 'turnserver')).find((p) => existsSync(p));
  return found || null;
}

/** docs/turnserver.conf without its `[site]` lines; throws if those are not SITE_KEYS. */
function documentedConfig() {
  const kept = [];
  const site = [];
  let marked = false;
  for (const raw of readFileSync(CONF, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) {
      marked ||= line.startsWith('# [site]');
      continue;
    }
    if (marked) site.push(line.split('=')[0]);
    else kept.push(line);
    marked = false;
  }
  if ([...site].sort().join() !== [...SITE_KEYS].sort().join()) {
    throw new Error(`docs/turnserver.conf's [site] keys ${site} are not the ones the tests set ${SITE_KEYS}`);
  }
  return kept.join('\n');
}

const bindUdp = (port) => new Promise((resolve) => {
  const socket = createSocket('udp4');
  socket.once('error', () => resolve(false));
  socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
});

const tcpPort = () => new Promise((resolve, reject) => {
  const server = createServer();
  server.once('error', reject);
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});

/** A loopback port free for both TCP and UDP right now. */
async function freePort() {
  for (let i = 0; i < 50; i += 1) {
    const port = await tcpPort();
    if (await bindUdp(port)) return port;
  }
  throw new Error('no port free for both TCP and UDP');
}

const listening = (port) => new Promise((resolve) => {
  const socket = connect(port, '127.0.0.1');
  socket.once('connect', () => { socket.destroy(); resolve(true); });
  socket.once('error', () => resolve(false));
});

/**
 * Starts a turnserver: {secret, port, tlsPort, relayPorts: [first, last], urls: {udp, tcp, tls},
 * spki (the certificate's SPKI hash for Chromium's --ignore-certificate-errors-spki-list),
 * log(), stop()}.
 */
export async function startCoturn() {
  const binary = turnserverBinary();
  if (!binary) throw new Error('coturn is not installed, or $BEDSIDE_TEST_TURNSERVER is empty (./scripts/test installs it)');
  const dir = mkdtempSync(join(tmpdir(), 'bedside-coturn-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-keyout', key, '-out', cert, '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  const spki = createHash('sha256')
    .update(new X509Certificate(readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');
  const secret = randomBytes(16).toString('hex');
  const port = await freePort();
  const tlsPort = await freePort();
  // Below Linux's ephemeral range (32768+), where port-0 sockets land.
  const first = 20000 + Math.floor(Math.random() * 50) * RELAY_PORTS;
  const relayPorts = [first, first + RELAY_PORTS - 1];
  const logFile = join(dir, 'turn.log');
  const conf = join(dir, 'turnserver.conf');
  // The [site] values, then what only a loopback test needs: one address for listening and
  // relaying, loopback peers allowed (the SFU is on 127.0.0.1), state and log files in the
  // temporary directory, a log line per allocation (`verbose`).
  writeFileSync(conf, `${documentedConfig()}
static-auth-secret=${secret}
realm=bedside.test
listening-port=${port}
tls-listening-port=${tlsPort}
cert=${cert}
pkey=${key}
min-port=${relayPorts[0]}
max-port=${relayPorts[1]}
listening-ip=127.0.0.1
relay-ip=127.0.0.1
allow-loopback-peers
userdb=${join(dir, 'turndb')}
pidfile=${join(dir, 'turnserver.pid')}
log-file=${logFile}
simple-log
verbose
`);
  const child = spawn(binary, ['-c', conf], { stdio: 'ignore' });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + START_WAIT_MS;
  while (!((await listening(port)) && (await listening(tlsPort)))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const text = log();
      await stop();
      throw new Error(`turnserver did not start:\n${text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    secret,
    port,
    tlsPort,
    relayPorts,
    spki,
    urls: {
      udp: `turn:127.0.0.1:${port}?transport=udp`,
      tcp: `turn:127.0.0.1:${port}?transport=tcp`,
      tls: `turns:localhost:${tlsPort}?transport=tcp`,
    },
    log,
    stop,
  };
}
