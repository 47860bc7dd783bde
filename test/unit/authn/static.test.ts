import { timingSafeEqual } from 'node:crypto';
import { describe, expect, it, vi, type Mock } from 'vitest';
import { tokenHash } from '../../../src/authn/bearer.js';
import type { AuthnLogger } from '../../../src/authn/principal.js';
import { createStaticProvider } from '../../../src/authn/static.js';
import { staticProviderSchema } from '../../../src/authn/provider-config.js';
import { addToken, createToken, revokeToken } from '../../../src/authn/token-store.js';
import type { Clock } from '../../../src/clock.js';
import { ConfigError, GatewayError } from '../../../src/errors.js';

vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return { ...real, timingSafeEqual: vi.fn(real.timingSafeEqual) };
});
const safeEqual = timingSafeEqual as unknown as Mock<typeof timingSafeEqual>;

const T0 = Date.parse('2025-06-01T00:00:00Z');

function setup(initial: string) {
  let t = T0;
  const clock: Clock = { now: () => t, hrtime: () => BigInt(t) * 1_000_000n };
  const file = { text: initial, mtimeMs: 1, reads: 0, gone: false };
  const warnings: string[] = [];
  const logger: AuthnLogger = { warn: (_o, m) => warnings.push(m), info: () => undefined };
  const provider = createStaticProvider(
    'team',
    staticProviderSchema.parse({ type: 'static', tokensFile: '/tokens.json' }),
    {
      clock,
      logger,
      readFile: () => {
        file.reads++;
        return file.text;
      },
      statFile: () => {
        if (file.gone) throw new Error('ENOENT');
        return { mtimeMs: file.mtimeMs, size: file.text.length };
      },
    },
  );
  const write = (text: string): void => {
    file.text = text;
    file.mtimeMs++;
  };
  return { provider, file, write, warnings, advance: (ms: number) => (t += ms) };
}

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    const r = await p;
    return typeof r === 'string' ? r : 'principal';
  } catch (err) {
    return err instanceof GatewayError ? err.code : `other: ${String(err)}`;
  }
}

describe('static provider', () => {
  const alice = createToken('alice', 3600, T0, { scopes: ['read'] });
  const old = createToken('old', 60, T0 - 3_600_000);
  const gone = createToken('gone', 3600, T0);
  let text = addToken(undefined, alice.record, T0);
  text = addToken(text, old.record, T0);
  text = addToken(text, gone.record, T0);
  text = revokeToken(text, 'gone', T0).text;

  it('a known, live token → principal with its name and scopes', async () => {
    const { provider } = setup(text);
    await expect(provider.authenticate({ kind: 'bearer', token: alice.token, hash: tokenHash(alice.token) })).resolves.toEqual({
      subject: 'alice',
      scopes: ['read'],
      provider: 'team',
      claims: { name: 'alice', createdAt: alice.record.createdAt },
      expiresAtMs: T0 + 3_600_000,
    });
  });

  it.each([
    ['expired', () => old.token, 'ERR_AUTHN_INVALID_TOKEN'],
    ['revoked', () => gone.token, 'ERR_AUTHN_INVALID_TOKEN'],
    ['unknown pcs_ token', () => createToken('x', 60, T0).token, 'ERR_AUTHN_INVALID_TOKEN'],
    ['unknown other token (next provider)', () => 'eyJhbGciOi.x.y', 'not_applicable'],
  ])('%s → %s', async (_name, token, want) => {
    const { provider } = setup(text);
    const t = token();
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: t, hash: tokenHash(t) }))).toBe(want);
  });

  it('expires at expiresAt by the injected clock', async () => {
    const { provider, advance } = setup(text);
    const h = tokenHash(alice.token);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('principal');
    advance(3_600_000);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('picks up a revocation when the file changes, within a second, without re-reading more than once a second', async () => {
    const { provider, file, write, advance } = setup(text);
    const h = tokenHash(alice.token);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('principal');
    write(revokeToken(file.text, 'alice', T0).text);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('principal'); // same second: not checked yet
    advance(1000);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('ERR_AUTHN_INVALID_TOKEN');
    const reads = file.reads;
    for (let i = 0; i < 100; i++) await provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }).catch(() => undefined);
    advance(1000);
    await provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }).catch(() => undefined);
    expect(file.reads).toBe(reads); // unchanged mtime: no re-read
    expect(provider.stats().reloads).toBe(1);
  });

  it('keeps the last good set on a half-written or vanished file, and recovers', async () => {
    const { provider, file, write, advance, warnings } = setup(text);
    const h = tokenHash(alice.token);
    const full = revokeToken(file.text, 'alice', T0).text;
    write(full.slice(0, 40));
    advance(1000);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('principal');
    expect(warnings.at(-1)).toContain('keeping the last good set');
    file.gone = true;
    advance(1000);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('principal');
    file.gone = false;
    write(full);
    advance(1000);
    expect(await outcome(provider.authenticate({ kind: 'bearer', token: alice.token, hash: h }))).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('never logs a token', async () => {
    const { provider, write, advance, warnings } = setup(text);
    write('{"tokens":');
    advance(1000);
    await provider.authenticate({ kind: 'bearer', token: alice.token, hash: tokenHash(alice.token) });
    expect(JSON.stringify(warnings)).not.toContain(alice.token);
  });

  it('a file unusable at start is a ConfigError naming the key', () => {
    expect(() => setup('{"tokens": [')).toThrow(ConfigError);
    try {
      setup('nope');
    } catch (err) {
      expect((err as ConfigError).path).toBe('authProviders.team.tokensFile');
    }
  });

  it('compares against every record (no early exit): the same number of constant-time comparisons wherever the match is', async () => {
    let many: string | undefined;
    const tokens = Array.from({ length: 50 }, (_, i) => createToken(`u${i}`, 3600, T0));
    for (const tk of tokens) many = addToken(many, tk.record, T0);
    const { provider } = setup(many!);
    const compares = async (tok: string): Promise<number> => {
      const before = safeEqual.mock.calls.length;
      await provider.authenticate({ kind: 'bearer', token: tok, hash: tokenHash(tok) }).catch(() => undefined);
      return safeEqual.mock.calls.length - before;
    };
    expect(await compares(tokens[0]!.token)).toBe(50);
    expect(await compares(tokens[49]!.token)).toBe(50);
    expect(await compares('pcs_unknown')).toBe(50);
  });
});
