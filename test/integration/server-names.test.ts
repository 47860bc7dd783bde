/**
 * `serverNames` on the running gateway: a listener whose certificate covers none of the names clients use
 * starts (a client that checks only the CA still connects) but says so loudly — a warn line naming the
 * listener and the names, and `portcullis_tls_certificate_name_mismatch{listener}` at 1 — and a reload
 * recomputes both. The listener keeps serving meanwhile; expired and not-yet-valid certificates stay
 * refused at load (test/unit/config/load.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reloadGateway, startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import type { TestPkiPaths } from '../helpers/pki.js';
import { h1 } from '../helpers/clients.js';

const GAUGE = 'portcullis_tls_certificate_name_mismatch';

let gw: TestGateway;

const route = (id: string): Record<string, unknown> => ({ id, match: { pathPrefix: '/' }, upstream: 'builtin:echo' });

function config(pki: TestPkiPaths, mainNames: string[]): Record<string, unknown> {
  return {
    listeners: [
      tlsListener(pki, { serverNames: mainNames }),
      tlsListener(pki, { name: 'named', serverNames: ['localhost'], routes: [route('named')] }),
      tlsListener(pki, { name: 'ip', routes: [route('ip')] }),
    ],
  };
}

/** The warn lines about `listener`'s certificate names so far. */
function mismatchLines(listener: string): Record<string, unknown>[] {
  return gw
    .logs()
    .filter((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.startsWith(`listener "${listener}"`) && l.msg.includes('covers none of the names'));
}

beforeAll(async () => {
  gw = await startGateway((pki) => config(pki, ['gw.example.org', 'gw']));
});

afterAll(async () => {
  await gw?.close();
});

describe('a certificate that covers none of serverNames', () => {
  it('start: a warn line naming the listener and the names; the gauge is 1 for it and 0 for the others', async () => {
    const lines = mismatchLines('main');
    expect(lines).toHaveLength(1);
    expect(lines[0]?.msg).toContain('gw.example.org, gw');
    expect(lines[0]?.msg).toContain('listeners[0].serverNames');
    expect(mismatchLines('named')).toHaveLength(0);
    expect(await gw.metric(GAUGE, { listener: 'main' })).toBe(1);
    expect(await gw.metric(GAUGE, { listener: 'named' })).toBe(0);
    // An IP listen address and no serverNames: nothing to check, 0.
    expect(await gw.metric(GAUGE, { listener: 'ip' })).toBe(0);
  });

  it('the listener serves all the same (a client that checks the CA only connects)', async () => {
    expect((await h1(gw.port('main'), gw.pki, { client: 'alice', path: '/' })).status).toBe(200);
  });

  it('a reload recomputes it: fixed names clear the gauge; broken again, it is 1 and warned again', async () => {
    expect(await reloadGateway(gw, (pki) => config(pki, ['localhost']))).toEqual({ ok: true });
    expect(await gw.metric(GAUGE, { listener: 'main' })).toBe(0);
    expect(mismatchLines('main')).toHaveLength(1);
    expect(await reloadGateway(gw, (pki) => config(pki, ['other.example.org']))).toEqual({ ok: true });
    expect(await gw.metric(GAUGE, { listener: 'main' })).toBe(1);
    expect(mismatchLines('main')).toHaveLength(2);
    expect(mismatchLines('main')[1]?.msg).toContain('other.example.org');
    expect(await gw.metric(GAUGE, { listener: 'named' })).toBe(0);
  });
});
