/**
 * The shared tier of the introspection cache (store.type: redis), in memory: two providers ("replicas") on one
 * store with one fake clock. One replica's checked answer spares the other an IdP call; a cached decision
 * needs no store round trip; a purge voids every shared answer, even one written late by a call that began
 * before it; `exp` is checked again by the reader; a store that fails is a miss (the IdP decides), never a pass.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { tokenHash } from '../../../src/authn/bearer.js';
import { createIntrospectionProvider } from '../../../src/authn/introspection.js';
import { introspectionProviderSchema } from '../../../src/authn/provider-config.js';
import type { Authenticator, FetchLike } from '../../../src/authn/principal.js';
import type { Clock } from '../../../src/clock.js';
import { GatewayError } from '../../../src/errors.js';
import { createLocalChannel, createMemoryStore } from '../../../src/store/memory.js';
import type { KeyValueStore } from '../../../src/store/store.js';
import { createFakeIdp, type FakeIdp } from '../../helpers/idp.js';

let t = Date.parse('2025-06-01T00:00:00Z');
let m = 5_000_000;
const clock: Clock = { now: () => t, hrtime: () => BigInt(m) * 1_000_000n };
const advance = (ms: number): void => {
  t += ms;
  m += ms;
};

let idp: FakeIdp;
let kv: KeyValueStore;
let reads: number;

/** The memory store, counting reads (a cached decision must cost none). */
function countingStore(): KeyValueStore {
  const s = createMemoryStore({}, { clock });
  return {
    ...s,
    get: (k) => {
      reads++;
      return s.get(k);
    },
    getMany: (k) => {
      reads++;
      return s.getMany(k);
    },
  };
}

function replica(store: KeyValueStore = kv, fetchImpl?: FetchLike): Authenticator {
  const config = introspectionProviderSchema.parse({
    type: 'introspection',
    endpoint: idp.introspectionUri,
    clientId: idp.clientId,
    clientSecretFile: '/run/secrets/introspection',
    cache: { maxTtlSeconds: 60, negativeTtlSeconds: 10 },
  });
  return createIntrospectionProvider('opaque', config, {
    clock,
    fetch: fetchImpl ?? idp.fetch,
    readFile: () => `${idp.clientSecret}\n`,
    shared: { kv: store, channel: createLocalChannel(), whenUnavailable: 'service-unavailable' },
  });
}

async function outcome(p: Authenticator, token: string): Promise<string> {
  try {
    const r = await p.authenticate({ kind: 'bearer', token, hash: tokenHash(token) });
    return r === 'not_applicable' ? r : `ok:${r.subject}`;
  } catch (err) {
    return err instanceof GatewayError ? err.code : `other: ${String(err)}`;
  }
}

beforeEach(async () => {
  idp = await createFakeIdp();
  reads = 0;
  kv = countingStore();
});

describe('introspection answers shared between replicas', () => {
  it('an answer checked on A spares B the IdP call; then B decides from its near-cache without a store read', async () => {
    const token = idp.issueOpaque();
    const a = replica();
    const b = replica();
    expect(await outcome(a, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(1);
    expect(await outcome(b, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(1);
    const before = reads;
    for (let i = 0; i < 10; i++) expect(await outcome(b, token)).toBe('ok:alice');
    expect(reads).toBe(before);
  });

  it('shares negative answers too (a revoked token is not asked again by every replica)', async () => {
    const token = idp.issueOpaque();
    idp.revoke(token);
    expect(await outcome(replica(), token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(replica(), token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(1);
  });

  it('a purge voids every shared answer: the next replica asks the IdP and sees the revocation', async () => {
    const token = idp.issueOpaque();
    const a = replica();
    expect(await outcome(a, token)).toBe('ok:alice');
    idp.revoke(token);
    a.purge?.(tokenHash(token));
    await a.purgeShared?.();
    expect(await outcome(replica(), token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(a, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('an answer written late by a call that began before the purge is ignored (no resurrection)', async () => {
    const token = idp.issueOpaque();
    let release: () => void = () => undefined;
    // The IdP answers at once (active), the answer reaches the gateway only on release.
    const held: FetchLike = async (url, init) => {
      const answer = await idp.fetch(url, init);
      await new Promise<void>((r) => (release = r));
      return answer;
    };
    const slow = replica(kv, held);
    const pending = outcome(slow, token);
    await new Promise((r) => setTimeout(r, 10));
    // The token is revoked and purged while the slow call is out; its (old) answer then lands in the store.
    idp.revoke(token);
    await replica().purgeShared?.();
    release();
    expect(await pending).toBe('ok:alice');
    expect(await outcome(replica(), token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('the reader checks exp again by its own clock, and nothing shared outlives maxTtl', async () => {
    const token = idp.issueOpaque({ active: true, sub: 'alice', exp: Math.floor(t / 1000) + 30 });
    expect(await outcome(replica(), token)).toBe('ok:alice');
    advance(31_000);
    idp.revoke(token);
    expect(await outcome(replica(), token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    const long = idp.issueOpaque();
    expect(await outcome(replica(), long)).toBe('ok:alice');
    advance(61_000);
    idp.revoke(long);
    expect(await outcome(replica(), long)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('a store that fails is a miss: the IdP decides (a valid token passes, a revoked one does not)', async () => {
    const down: KeyValueStore = {
      ...createMemoryStore({}, { clock }),
      get: () => Promise.reject(new Error('store down')),
      getMany: () => Promise.reject(new Error('store down')),
      set: () => Promise.reject(new Error('store down')),
      add: () => Promise.reject(new Error('store down')),
    };
    const good = idp.issueOpaque();
    const bad = idp.issueOpaque();
    idp.revoke(bad);
    const p = replica(down);
    expect(await outcome(p, good)).toBe('ok:alice');
    expect(await outcome(p, bad)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(2);
    await expect(p.purgeShared?.()).rejects.toThrow(/store down/);
  });
});
