// Starts the real `bedside serve` (the debug binary) on loopback with a temporary data dir
// and ephemeral HTTP and UDP ports, and reads the admin key it prints once.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';

/** The binary under test: $BEDSIDE_BIN, else $CARGO_TARGET_DIR/debug/bedside. */
export function binary() {
  if (process.env.BEDSIDE_BIN) return process.env.BEDSIDE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'bedside-target');
  return join(target, 'debug', 'bedside');
}

/**
 * A running server: {base, adminKey, stop()}; `env` adds to its environment; `host` is the
 * address it listens on and announces (127.0.0.1 unless a test gives it a veth's address).
 */
export async function startServer({ env = {}, host = '127.0.0.1' } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'bedside-e2e-'));
  const child = spawn(binary(), [
    'serve', '--data-dir', dataDir, '--http', `${host}:0`, '--udp', `${host}:0`, '--announce-ip', host,
  ], {
    env: {
      ...process.env,
      // Every page load redeems and every join starts from 127.0.0.1: lift the per-IP limit.
      BEDSIDE_LIMITS__LINK_PER_IP_PER_MINUTE: '100000',
      BEDSIDE_LIMITS__LINK_BURST: '10000',
      BEDSIDE_LOG__LEVEL: process.env.BEDSIDE_LOG__LEVEL || 'warn,bedside=info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bedside serve did not start:\n${out}\n${err}`)), 30000);
    const check = () => {
      const key = out.match(/(bsk_[A-Za-z0-9_]+)/);
      const url = err.match(/listening on (http:\/\/[0-9.:]+)/);
      if (key && url) {
        clearTimeout(timer);
        resolve({ adminKey: key[1], base: url[1] });
      }
    };
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      rmSync(dataDir, { recursive: true, force: true });
      reject(new Error(`bedside serve exited with ${code}:\n${out}\n${err}`));
    });
  });
  return {
    ...ready,
    logs: () => err,
    async stop() {
      child.removeAllListeners('exit');
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 12000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
