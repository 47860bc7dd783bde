/**
 * Telemetry header matching, stripping in the one request pass, response stripping, and the
 * `telemetry` config keys (threat model #98).
 */
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { DEFAULTS } from '../../../src/config/defaults.js';
import { ConfigInvalid } from '../../../src/config/load.js';
import { loadConfigText } from '../../../src/load-config.js';
import type { ConfigError } from '../../../src/errors.js';
import { buildUpstreamHeaders, type GatewayHeaders } from '../../../src/mutate/request-headers.js';
import {
  compileTelemetryHeaders,
  isOptOutSignal,
  isTelemetryHeader,
  type TelemetryPolicy,
} from '../../../src/mutate/telemetry.js';

const defaults = (): ReturnType<typeof compileTelemetryHeaders> => {
  const errors: ConfigError[] = [];
  const m = compileTelemetryHeaders(
    DEFAULTS.telemetry.headers,
    'telemetry.headers',
    errors,
    DEFAULTS.telemetry.headers.length,
  );
  expect(errors).toEqual([]);
  return m;
};

describe('compileTelemetryHeaders / isTelemetryHeader', () => {
  const m = defaults();

  it('splits the default list into exact names and prefixes', () => {
    expect([...m.exact].sort()).toEqual(
      [
        'b3',
        'baggage',
        'newrelic',
        'sentry-trace',
        'traceparent',
        'tracestate',
        'uber-trace-id',
        'x-amzn-trace-id',
        'x-cloud-trace-context',
      ].sort(),
    );
    expect(m.prefixes).toEqual(['x-b3-', 'x-datadog-']);
  });

  it.each([
    ['traceparent', true],
    ['x-b3-traceid', true],
    ['x-b3-sampled', true],
    ['x-datadog-sampling-priority', true],
    ['x-amzn-trace-id', true],
    ['x-b3', false], // the prefix is "x-b3-"
    ['x-b3x-traceid', false],
    ['traceparent2', false],
    ['x-request-id', false],
    ['grpc-trace-bin', false], // not in the defaults
  ])('%s matches: %s', (name, want) => {
    expect(isTelemetryHeader(m, name)).toBe(want);
  });

  it('lower-cases and trims entries, and drops duplicate prefixes', () => {
    const errors: ConfigError[] = [];
    const c = compileTelemetryHeaders(
      ['  GRPC-Trace-Bin ', 'X-Custom-*', 'x-custom-*'],
      'telemetry.headers',
      errors,
    );
    expect(errors).toEqual([]);
    expect([...c.exact]).toEqual(['grpc-trace-bin']);
    expect(c.prefixes).toEqual(['x-custom-']);
  });

  it.each([
    ['*', 'a bare "*"'],
    ['', 'an empty entry'],
    ['x-*-id', '"*" in the middle'],
    ['*-trace', 'a leading "*"'],
    ['x-b3-**', 'two stars'],
    ['x trace', 'a space'],
    ['x:trace', 'a colon'],
  ])('refuses %j (%s) naming the key path of the entry', (entry) => {
    const errors: ConfigError[] = [];
    compileTelemetryHeaders(['traceparent', 'ok', entry], 'telemetry.headers', errors, 1);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.path).toBe('telemetry.headers[1]');
  });
});

describe('isOptOutSignal', () => {
  it.each([
    ['dnt', '1', true],
    ['sec-gpc', '1', true],
    ['dnt', ' 1 ', true],
    ['dnt', '0', false],
    ['sec-gpc', 'true', false],
    ['x-dnt', '1', false],
  ])('%s: %j → %s', (name, value, want) => {
    expect(isOptOutSignal(name, value)).toBe(want);
  });
});

describe('buildUpstreamHeaders with a telemetry policy', () => {
  const matcher = defaults();
  const gw = (telemetry?: TelemetryPolicy): GatewayHeaders => ({
    host: 'svc.example',
    clientAddress: '192.0.2.1',
    proto: 'https',
    xfcc: undefined,
    newRequestId: () => 'rid-1',
    ...(telemetry ? { telemetry } : {}),
  });
  const raw = [
    'Traceparent',
    '00-aa-bb-01',
    'X-B3-Sampled',
    '1',
    'Accept',
    '*/*',
    'baggage',
    'userId=admin',
    'X-B3',
    'keep',
  ];
  const names = (h: readonly string[]): string[] => h.filter((_, i) => i % 2 === 0);

  it.each([
    ['strip on', { matcher, strip: true, honorClientSignals: false }, raw, 3, true],
    ['strip off', { matcher, strip: false, honorClientSignals: false }, raw, 0, false],
    [
      'strip off, signals honoured, no signal',
      { matcher, strip: false, honorClientSignals: true },
      raw,
      0,
      false,
    ],
    [
      'strip off, DNT: 1 first',
      { matcher, strip: false, honorClientSignals: true },
      ['DNT', '1', ...raw],
      3,
      true,
    ],
    [
      'strip off, Sec-GPC: 1 last',
      { matcher, strip: false, honorClientSignals: true },
      [...raw, 'Sec-GPC', '1'],
      3,
      true,
    ],
    [
      'strip off, DNT: 1 not honoured',
      { matcher, strip: false, honorClientSignals: false },
      [...raw, 'DNT', '1'],
      0,
      false,
    ],
    ['strip on, DNT: 0', { matcher, strip: true, honorClientSignals: true }, [...raw, 'DNT', '0'], 3, true],
  ] as const)('%s', (_name, policy, input, count, response) => {
    const out = buildUpstreamHeaders(input, gw(policy));
    expect(out.telemetryStripped).toBe(count);
    expect(out.stripResponseTelemetry).toBe(response);
    const got = names(out.headers);
    for (const n of ['traceparent', 'x-b3-sampled', 'baggage']) expect(got.includes(n)).toBe(count === 0);
    // The near miss and ordinary headers always pass; the gateway's own headers are untouched.
    expect(got).toContain('x-b3');
    expect(got).toContain('accept');
    expect(got.slice(0, 4)).toEqual(['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']);
  });

  it('without a policy telemetry headers pass and nothing is counted', () => {
    const out = buildUpstreamHeaders(raw, gw());
    expect(out.telemetryStripped).toBe(0);
    expect(names(out.headers)).toContain('traceparent');
  });

  it('keeps the order of the surviving client headers', () => {
    const out = buildUpstreamHeaders(
      ['a', '1', 'traceparent', 'x', 'b', '2', 'DNT', '1', 'c', '3'],
      gw({ matcher, strip: false, honorClientSignals: true }),
    );
    expect(out.headers.slice(out.gatewayEnd)).toEqual(['a', '1', 'b', '2', 'dnt', '1', 'c', '3']);
  });
});

describe('telemetry config', () => {
  const base = (extra: Record<string, unknown>): string =>
    stringify({
      requireEncryption: false,
      admin: { enabled: false },
      ...extra,
      listeners: [
        {
          name: 'p',
          listen: '127.0.0.1:0',
          plaintext: true,
          routes: [
            { id: 'a', match: { pathPrefix: '/a/' }, upstream: 'builtin:echo', telemetry: { optOut: false } },
            { id: 'b', match: { pathPrefix: '/' }, upstream: 'builtin:echo' },
          ],
        },
      ],
    });

  it('defaults: optOut on, the default list, client signals ignored; a route override is kept by id', () => {
    const c = loadConfigText(base({}), '/tmp/x.yaml');
    expect(c.telemetry.optOut).toBe(true);
    expect(c.telemetry.honorClientSignals).toBe(false);
    expect(isTelemetryHeader(c.telemetry.matcher, 'x-datadog-origin')).toBe(true);
    const l = c.listeners[0];
    expect(l?.protocol === 'http' ? { ...l.routeTelemetryOptOut } : undefined).toEqual({ a: false });
  });

  it('an operator list extends the defaults, never replaces them', () => {
    const c = loadConfigText(
      base({
        telemetry: { headers: ['grpc-trace-bin', 'x-acme-*'], optOut: false, honorClientSignals: true },
      }),
      '/tmp/x.yaml',
    );
    const m = c.telemetry.matcher;
    for (const n of ['traceparent', 'x-b3-traceid', 'grpc-trace-bin', 'x-acme-span'])
      expect(isTelemetryHeader(m, n)).toBe(true);
    expect(c.telemetry.optOut).toBe(false);
    expect(c.telemetry.honorClientSignals).toBe(true);
  });

  it.each([
    [{ telemetry: { headers: ['ok', 'x-*-id'] } }, 'telemetry.headers[1]'],
    [{ telemetry: { headers: ['*'] } }, 'telemetry.headers[0]'],
    [{ telemetry: { optOut: 'yes' } }, 'telemetry.optOut'],
    [{ telemetry: { optout: true } }, 'telemetry.optout'],
  ])('refuses %j naming %s', (extra, path) => {
    let err: unknown;
    try {
      loadConfigText(base(extra), '/tmp/x.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigInvalid);
    expect((err as ConfigInvalid).errors.map((e) => e.path)).toContain(path);
  });
});

// Appended for threat model #98 (W3C Baggage limits); mid-file ESM imports are hoisted like any other.
import {
  BAGGAGE_MAX_BYTES,
  BAGGAGE_MAX_MEMBERS,
  emptyBaggageTally,
  isBaggageOverLimits,
  tallyBaggage,
} from '../../../src/mutate/telemetry.js';

describe('baggage over the W3C limits (8192 bytes, 180 members, all lines together)', () => {
  const matcher = defaults();
  const gwOf = (telemetry?: TelemetryPolicy): GatewayHeaders => ({
    host: 'svc.example',
    clientAddress: '192.0.2.1',
    proto: 'https',
    xfcc: undefined,
    newRequestId: () => 'rid-1',
    ...(telemetry ? { telemetry } : {}),
  });
  const relay: TelemetryPolicy = { matcher, strip: false, honorClientSignals: true };
  const members = (n: number, width = 4): string =>
    Array.from({ length: n }, (_, i) => `k${i}=${'v'.repeat(width)}`).join(',');
  const tally = (...lines: string[]): ReturnType<typeof emptyBaggageTally> => {
    const t = emptyBaggageTally();
    for (const l of lines) tallyBaggage(t, l);
    return t;
  };
  const baggageOf = (h: readonly string[]): string[] =>
    h.filter((_, i) => i % 2 === 1 && h[i - 1] === 'baggage');

  it('the constants are the W3C ones', () => {
    expect([BAGGAGE_MAX_BYTES, BAGGAGE_MAX_MEMBERS]).toEqual([8192, 180]);
  });

  it('counts bytes and members over every line, the joining comma included; the limits are inclusive', () => {
    expect(tally('a=1', 'b=2,c=3')).toEqual({ lines: 2, bytes: 3 + 1 + 7, members: 3 });
    expect(isBaggageOverLimits(tally(members(180)))).toBe(false);
    expect(isBaggageOverLimits(tally(members(181)))).toBe(true);
    expect(isBaggageOverLimits(tally(members(90), members(90)))).toBe(false);
    expect(isBaggageOverLimits(tally(members(90), members(91)))).toBe(true);
    expect(isBaggageOverLimits(tally('k='.padEnd(8192, 'v')))).toBe(false);
    expect(isBaggageOverLimits(tally('k='.padEnd(8193, 'v')))).toBe(true);
    // Two lines of 4096: 8193 with the comma that joins them.
    expect(isBaggageOverLimits(tally('k='.padEnd(4096, 'v'), 'j='.padEnd(4096, 'v')))).toBe(true);
    // Empty members count: a run of commas cannot slip 1,000 members past the limit.
    expect(isBaggageOverLimits(tally(','.repeat(1_000)))).toBe(true);
  });

  it.each([
    ['no policy', undefined],
    ['policy relaying (optOut off, signals honoured)', relay],
  ])('%s: a baggage within the limits is relayed as is, with nothing counted', (_label, policy) => {
    const b = members(180);
    const s = buildUpstreamHeaders(['Baggage', b, 'Accept', '*/*'], gwOf(policy));
    expect(baggageOf(s.headers)).toEqual([b]);
    expect(s.telemetryStripped).toBe(0);
  });

  it.each([
    ['no policy', undefined],
    ['policy relaying', relay],
  ])(
    '%s: 181 members, or 8193 bytes, or two lines over the limits together: every baggage line goes, each counted',
    (_label, policy) => {
      for (const lines of [[members(181)], ['k='.padEnd(8193, 'v')], [members(100), members(100)]]) {
        const raw = ['Accept', '*/*'];
        for (const l of lines) raw.push('baggage', l);
        raw.push('traceparent', '00-aa-bb-01', 'X-Keep', 'yes');
        const s = buildUpstreamHeaders(raw, gwOf(policy));
        expect(baggageOf(s.headers)).toEqual([]);
        expect(s.telemetryStripped).toBe(lines.length);
        // Nothing else is touched: the rest keeps its order after the gateway's own headers.
        expect(s.headers.slice(s.gatewayEnd)).toEqual([
          'accept',
          '*/*',
          'traceparent',
          '00-aa-bb-01',
          'x-keep',
          'yes',
        ]);
      }
    },
  );

  it('with optOut on the baggage is stripped as a telemetry header, counted once', () => {
    const s = buildUpstreamHeaders(
      ['baggage', members(300)],
      gwOf({ matcher, strip: true, honorClientSignals: false }),
    );
    expect(baggageOf(s.headers)).toEqual([]);
    expect(s.telemetryStripped).toBe(1);
  });

  it('a DNT opt-out and an oversized baggage: dropped and counted once, not twice', () => {
    const s = buildUpstreamHeaders(['baggage', members(300), 'DNT', '1'], gwOf(relay));
    expect(baggageOf(s.headers)).toEqual([]);
    expect(s.telemetryStripped).toBe(1);
  });

  it('only a header named exactly baggage is measured', () => {
    const big = members(400);
    const s = buildUpstreamHeaders(['x-baggage', big, 'baggage2', big], gwOf(relay));
    expect(s.headers.slice(s.gatewayEnd)).toEqual(['x-baggage', big, 'baggage2', big]);
    expect(s.telemetryStripped).toBe(0);
  });
});
