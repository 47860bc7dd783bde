/**
 * A real `redis-server` (Debian's) for store tests: started on a free loopback port in a temp folder, with no
 * persistence (`--save '' --appendonly no`), optionally TLS only (the test PKI's server certificate, client
 * certificates required) and a password (`--requirepass`). Faults: kill and restart on the same port, stall
 * (SIGSTOP) and resume (SIGCONT). Tests skip with a printed reason when the binary is missing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './binary.js';
import type { TestPkiPaths } from './pki.js';

export const REDIS_SERVER = '/usr/bin/redis-server';

/** Why Redis tests cannot run here, or undefined when they can (printed by the skipping suite). */
export function redisMissing(suite: string): string | undefined {
  if (existsSync(REDIS_SERVER)) return undefined;
  const why = `${suite}: skipped: ${REDIS_SERVER} is missing (apt-get install redis-server)`;
  console.warn(why);
  return why;
}

export interface TestRedisOptions {
  /** TLS only, with client certificates required (signed by the test CA). */
  readonly tls?: TestPkiPaths;
  readonly password?: string;
  /** `--maxmemory` in bytes with `allkeys-lru`: keys are evicted under pressure. */
  readonly maxmemoryBytes?: number;
}

export interface TestRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>/0` or `rediss://...` */
  readonly url: string;
  /** Kills the server (SIGKILL) and waits for its exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  stall(): void;
  resume(): void;
  close(): Promise<void>;
}

async function untilListening(port: number, deadlineMs = 10_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`redis-server did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts `redis-server` on a free loopback port. */
export async function startRedis(opts: TestRedisOptions = {}): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-redis-'));
  const port = await freePort();
  const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no'];
  if (opts.tls !== undefined)
    args.push(
      '--port', '0',
      '--tls-port', String(port),
      '--tls-cert-file', opts.tls.server.cert,
      '--tls-key-file', opts.tls.server.key,
      '--tls-ca-cert-file', opts.tls.ca,
      '--tls-auth-clients', 'yes',
    );
  else args.push('--port', String(port));
  if (opts.password !== undefined) args.push('--requirepass', opts.password);
  if (opts.maxmemoryBytes !== undefined)
    args.push('--maxmemory', String(opts.maxmemoryBytes), '--maxmemory-policy', 'allkeys-lru');
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    child = spawn(REDIS_SERVER, args, { stdio: 'ignore' });
    await untilListening(port);
  };
  const kill = async (): Promise<void> => {
    const c = child;
    if (c === undefined || c.exitCode !== null) return;
    const exited = new Promise((resolve) => c.once('exit', resolve));
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    port,
    url: `${opts.tls !== undefined ? 'rediss' : 'redis'}://127.0.0.1:${port}/0`,
    kill,
    restart: start,
    stall: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    async close() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
