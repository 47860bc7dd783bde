import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../../src/config/defaults.js';
import type { ConfigError } from '../../../src/errors.js';
import { buildResponseHeaders } from '../../../src/mutate/response-headers.js';
import { compileTelemetryHeaders, type TelemetryPolicy } from '../../../src/mutate/telemetry.js';

/** undici's raw response header list from name/value pairs. */
const raw = (...pairs: [string, string][]): Buffer[] => pairs.flat().map((s) => Buffer.from(s, 'latin1'));

const policy = (): TelemetryPolicy => {
  const errors: ConfigError[] = [];
  const matcher = compileTelemetryHeaders(
    DEFAULTS.telemetry.headers,
    'telemetry.headers',
    errors,
    DEFAULTS.telemetry.headers.length,
  );
  expect(errors).toEqual([]);
  return { matcher, strip: true, honorClientSignals: false };
};

describe('buildResponseHeaders (RFC 9110 §7.6.1; RFC 9113 §8.2.2, threat model #83)', () => {
  it.each<[string, [string, string][], Record<string, string | string[]>]>([
    [
      'the upstream /chunked answer',
      [
        ['Content-Type', 'text/plain'],
        ['Keep-Alive', 'timeout=5'],
        ['Connection', 'keep-alive, x-secret-hop'],
        ['X-Secret-Hop', 'drop-me'],
        ['Transfer-Encoding', 'chunked'],
      ],
      { 'content-type': 'text/plain' },
    ],
    [
      'every hop-by-hop header',
      [
        ['connection', 'close'],
        ['keep-alive', 'a'],
        ['proxy-connection', 'b'],
        ['transfer-encoding', 'chunked'],
        ['upgrade', 'h2c'],
        ['te', 'trailers'],
        ['trailer', 'x'],
        ['http2-settings', 'y'],
        ['etag', '"1"'],
      ],
      { etag: '"1"' },
    ],
    [
      'nominated names are case-insensitive, may come before Connection, and several Connection lines count',
      [
        ['x-a', '1'],
        ['Connection', 'X-A'],
        ['connection', ' x-b ,'],
        ['x-b', '2'],
        ['x-c', '3'],
      ],
      { 'x-c': '3' },
    ],
    [
      'no Connection header: end-to-end headers untouched, repeated names kept in order',
      [
        ['Set-Cookie', 'a=1'],
        ['set-cookie', 'b=2'],
        ['Cache-Control', 'no-store'],
        ['set-cookie', 'c=3'],
      ],
      { 'set-cookie': ['a=1', 'b=2', 'c=3'], 'cache-control': 'no-store' },
    ],
  ])('%s', (_label, pairs, expected) => {
    const out = buildResponseHeaders(raw(...pairs), 'rid-1', undefined);
    expect(out.headers).toEqual({ ...expected, 'x-request-id': 'rid-1' });
    expect(out.telemetryStripped).toBe(0);
  });

  it('adds the request id unless the upstream set its own, which it keeps', () => {
    expect(buildResponseHeaders(raw(['a', '1']), 'rid-1', undefined).headers['x-request-id']).toBe('rid-1');
    expect(
      buildResponseHeaders(raw(['X-Request-Id', 'up-7']), 'rid-1', undefined).headers['x-request-id'],
    ).toBe('up-7');
  });

  it('keeps the bytes of a value (latin1 in, latin1 out)', () => {
    const value = Buffer.from([0x61, 0xe9, 0xff]);
    const out = buildResponseHeaders([Buffer.from('x-v'), value], 'r', undefined);
    expect(Buffer.from(out.headers['x-v'] as string, 'latin1')).toEqual(value);
  });

  it('strips telemetry headers (exact names and prefixes) under an opt-out and counts each line', () => {
    const out = buildResponseHeaders(
      raw(
        ['traceparent', 'x'],
        ['X-Datadog-Trace-Id', '1'],
        ['x-b3-spanid', 'a'],
        ['x-b3-spanid', 'b'],
        ['content-type', 'text/plain'],
        ['x-b3', 'keep'],
      ),
      'rid-1',
      policy(),
    );
    expect(out.headers).toEqual({ 'content-type': 'text/plain', 'x-b3': 'keep', 'x-request-id': 'rid-1' });
    expect(out.telemetryStripped).toBe(4);
  });

  it('without an opt-out, telemetry headers pass', () => {
    const out = buildResponseHeaders(raw(['traceparent', 'x'], ['baggage', 'k=v']), 'rid-1', undefined);
    expect(out.headers).toMatchObject({ traceparent: 'x', baggage: 'k=v' });
  });
});
