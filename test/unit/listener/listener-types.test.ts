/**
 * The listener table (listener/listener-types.ts) and the Listener contract (listener/listener.ts): every
 * protocol of the config makes a listener through the one table, unbound until `start`; only HTTP listeners
 * get a request handler; a reload block of another protocol, or none, is refused before anything changes.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../../src/clock.js';
import type { RuntimeConfig } from '../../../src/config/runtime.js';
import { loadConfigText } from '../../../src/load-config.js';
import type { HttpHandler } from '../../../src/listener/http-handler.js';
import { listenerBlock, type ListenerRuntime } from '../../../src/listener/listener.js';
import { createListener, LISTENER_TYPES, requestHandlerOf } from '../../../src/listener/listener-types.js';
import { createLogger } from '../../../src/observability/logger.js';
import { createMetrics } from '../../../src/observability/metrics.js';
import { writePki } from '../../helpers/pki.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-listener-types-'));
const pkiDir = join(dir, 'pki');
const tls = {
  cert: join(pkiDir, 'server.pem'),
  key: join(pkiDir, 'server-key.pem'),
  clientCertificate: 'require',
  clientCa: join(pkiDir, 'ca.pem'),
};

/** A config with one HTTP listener `web` and one TCP listener `comm` (or `comm` over HTTP, `swapped`). */
function config(swapped = false): RuntimeConfig {
  const web = {
    name: 'web',
    listen: '127.0.0.1:0',
    tls,
    routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
  };
  const comm = swapped
    ? {
        ...web,
        name: 'comm',
        routes: [{ id: 'echo2', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
      }
    : { name: 'comm', listen: '127.0.0.1:0', protocol: 'tcp', tls, upstream: 'tcp://127.0.0.1:8786' };
  return loadConfigText(
    stringify({ admin: { enabled: false }, listeners: [web, comm] }),
    join(dir, 'portcullis.yaml'),
  );
}

const handler: HttpHandler = { handle: () => undefined, handleUpgrade: () => undefined };
const runtimeOf = (c: RuntimeConfig): ListenerRuntime => ({
  config: c,
  handlers: new Map([['web', handler]]),
  ticketKeys: () => randomBytes(48),
});
const deps = () => ({
  logger: createLogger('silent'),
  metrics: createMetrics(new Registry(), { processMetrics: false }),
  clock: systemClock,
});

beforeAll(async () => {
  await writePki(pkiDir);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the listener table', () => {
  it('has one entry per protocol the config accepts', () => {
    expect(Object.keys(LISTENER_TYPES).sort()).toEqual(['decision', 'http', 'tcp']);
  });

  it.each(['web', 'comm'])(
    'makes %s unbound; start binds it, close ends it; drain before start resolves',
    async (name) => {
      const c = config();
      const block = c.listeners.find((l) => l.name === name)!;
      const listener = createListener(block, runtimeOf(c), deps());
      expect(listener.name).toBe(name);
      expect(() => listener.address()).toThrow(/not started/);
      await listener.drain(1_000);
      await listener.start();
      const { port } = listener.address();
      expect(port).toBeGreaterThan(0);
      await new Promise<void>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port }, () => {
          s.destroy();
          resolve();
        });
        s.on('error', reject);
      });
      await listener.close();
      await expect(
        new Promise((resolve, reject) => {
          const s = connect({ host: '127.0.0.1', port }, () => reject(new Error('still accepting')));
          s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code));
        }),
      ).resolves.toBe('ECONNREFUSED');
    },
  );

  it('gives a request handler to HTTP listeners only, built by the caller', () => {
    const c = config();
    const built: string[] = [];
    const build = (l: { readonly name: string }): HttpHandler => {
      built.push(l.name);
      return handler;
    };
    const builders = { http: build, decision: build };
    expect(requestHandlerOf(listenerBlock(c, 'web', 'http'), builders)).toBe(handler);
    expect(requestHandlerOf(listenerBlock(c, 'comm', 'tcp'), builders)).toBeUndefined();
    expect(built).toEqual(['web']);
  });

  it('refuses to make an HTTP listener the runtime has no handler for', () => {
    const c = config();
    expect(() =>
      createListener(listenerBlock(c, 'web', 'http'), { ...runtimeOf(c), handlers: new Map() }, deps()),
    ).toThrow('no handler for listener web');
  });
});

describe('update: a listener reads its own block of the reloaded config', () => {
  it.each<[string, () => RuntimeConfig, RegExp]>([
    ['of another protocol', () => config(true), /listener comm changed protocol/],
    [
      'missing',
      () => ({ ...config(), listeners: config().listeners.filter((l) => l.name !== 'comm') }),
      /listener comm is missing/,
    ],
  ])('throws when the block is %s', async (_what, next, error) => {
    const c = config();
    const listener = createListener(listenerBlock(c, 'comm', 'tcp'), runtimeOf(c), deps());
    await listener.start();
    try {
      expect(() => listener.update(runtimeOf(next()))).toThrow(error);
      // Nothing changed: it still accepts on the same port.
      expect(listener.address().port).toBeGreaterThan(0);
    } finally {
      await listener.close();
    }
  });
});
