// A patient on a slow link, on this machine: a network namespace joined to the host by a veth
// pair, with a `tbf` qdisc (the kernel here has no netem) on the host's end limiting what
// reaches the namespace. A browser started inside it (`ip netns exec`) meets the server at
// the host end's address through that limit; its uplink stays free.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = (cmd, ...args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * Creates the namespace and its link: {ns, hostIp, nsIp, launcher, limit(kbit), remove()}.
 * `launcher` is an executable that starts Chromium inside the namespace (for playwright's
 * `executablePath`).
 */
export function limitedLink() {
  const id = process.pid % 10000;
  const ns = `bside${id}`;
  const hostIf = `bsh${id}`;
  const nsIf = `bsn${id}`;
  const subnet = `10.231.${id % 250}`;
  const hostIp = `${subnet}.1`;
  const nsIp = `${subnet}.2`;
  try { run('ip', 'netns', 'del', ns); } catch { /* none left over */ }
  run('ip', 'netns', 'add', ns);
  run('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
  run('ip', 'link', 'set', nsIf, 'netns', ns);
  run('ip', 'addr', 'add', `${hostIp}/30`, 'dev', hostIf);
  run('ip', 'link', 'set', hostIf, 'up');
  run('ip', '-n', ns, 'addr', 'add', `${nsIp}/30`, 'dev', nsIf);
  run('ip', '-n', ns, 'link', 'set', nsIf, 'up');
  run('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  const dir = mkdtempSync(join(tmpdir(), 'bedside-netns-'));
  const launcher = join(dir, 'chromium');
  const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
  writeFileSync(launcher, `#!/bin/sh\nexec ip netns exec ${ns} ${chromium} "$@"\n`, { mode: 0o755 });
  return {
    ns,
    hostIp,
    nsIp,
    launcher,
    /**
     * Limits the downlink to `kbit` kbit/s (tbf: a bucket of one full-size packet, 200 ms of queue, what
     * overflows is dropped); `null` lifts the limit.
     */
    limit(kbit) {
      if (kbit === null) {
        try { run('tc', 'qdisc', 'del', 'dev', hostIf, 'root'); } catch { /* no limit set */ }
        return;
      }
      run('tc', 'qdisc', 'replace', 'dev', hostIf, 'root', 'tbf',
        'rate', `${kbit}kbit`, 'burst', '1600', 'latency', '200ms');
    },
    remove() {
      try { run('ip', 'netns', 'del', ns); } catch { /* already gone */ }
      try { run('ip', 'link', 'del', hostIf); } catch { /* went with the namespace */ }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
