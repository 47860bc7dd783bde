import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { buildUpstreamHeaders, type GatewayHeaders } from '../../../src/mutate/request-headers.js';

const XFCC = 'Hash=00;Subject="CN=alice"';
const GW: GatewayHeaders = {
  host: 'gw.test:8443',
  clientAddress: '192.0.2.7',
  proto: 'https',
  xfcc: XFCC,
  newRequestId: () => 'rid-1',
};
/** What the gateway always puts first, in this order. */
const OWN = [
  'host',
  'gw.test:8443',
  'x-forwarded-for',
  '192.0.2.7',
  'x-forwarded-proto',
  'https',
  'x-forwarded-host',
  'gw.test:8443',
  'x-request-id',
  'rid-1',
  'x-forwarded-client-cert',
  XFCC,
];

/** Flat raw list from pairs, as `req.rawHeaders` carries it. */
function raw(...pairs: [string, string][]): string[] {
  return pairs.flat();
}

/** The client part of the output (after the gateway's own headers), as pairs. */
function clientPart(headers: readonly string[]): [string, string][] {
  expect(headers.slice(0, OWN.length)).toEqual(OWN);
  const out: [string, string][] = [];
  for (let i = OWN.length; i + 1 < headers.length; i += 2)
    out.push([headers[i] as string, headers[i + 1] as string]);
  return out;
}

/** How many times `name` occurs in a flat output list. */
function count(headers: readonly string[], name: string): number {
  return headers.filter((h, i) => i % 2 === 0 && h === name).length;
}

describe('buildUpstreamHeaders: spoofed identity and forwarding headers are removed (threat model #94–#96)', () => {
  it.each<[string]>([
    ['X-Forwarded-Client-Cert'],
    ['x-forwarded-client-cert'],
    ['X-FORWARDED-CLIENT-CERT'],
    ['X-Forwarded-For'],
    ['X-Forwarded-Proto'],
    ['X-Forwarded-Host'],
    ['X-Forwarded-Port'],
    ['X-Forwarded-Prefix'],
    ['X-Forwarded-Uri'],
    ['X-Forwarded-User'],
    ['X-Forwarded-Email'],
    ['Forwarded'],
    ['X-Real-IP'],
    ['Client-IP'],
    ['X-Client-IP'],
    ['True-Client-IP'],
    ['X-Cluster-Client-IP'],
    ['X-Original-URL'],
    ['X-Original-URI'],
    ['X-Rewrite-URL'],
    ['X-HTTP-Method-Override'],
    ['X-HTTP-Method'],
    ['X-Method-Override'],
    ['X-Auth-Subject'],
    ['X-Auth-Scopes'],
    ['X-Auth-User'],
    ['X-Auth-Request-Email'],
    ['X-Remote-User'],
    ['X-Remote-Group'],
    ['X-Remote-Extra-Scopes'],
    ['Impersonate-User'],
    ['Impersonate-Group'],
    ['Impersonate-Extra-Scopes'],
    ['Remote-User'],
    ['X-Client-Cert'],
    ['X-Client-Verify'],
    ['X-SSL-Client-Cert'],
    ['X-Client-Cert-San'],
  ])('%s', (name) => {
    const { headers } = buildUpstreamHeaders(raw([name, 'SPOOF'], [name, 'SPOOF2'], ['x-keep', 'v']), GW);
    expect(clientPart(headers)).toEqual([['x-keep', 'v']]);
    expect(headers.join('\n')).not.toContain('SPOOF');
  });

  it('the gateway headers are there exactly once, first, whatever the client sent', () => {
    const { headers } = buildUpstreamHeaders(
      raw(
        ['Host', 'evil'],
        ['X-Forwarded-For', '6.6.6.6'],
        ['x-forwarded-client-cert', 'a'],
        ['X-Forwarded-Client-Cert', 'b'],
        ['Accept', '*/*'],
      ),
      GW,
    );
    for (const name of [
      'host',
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-forwarded-host',
      'x-forwarded-client-cert',
    ])
      expect(count(headers, name)).toBe(1);
    expect(clientPart(headers)).toEqual([['accept', '*/*']]);
  });

  it('no client certificate: no XFCC at all, and the client cannot supply one', () => {
    const { headers } = buildUpstreamHeaders(raw(['X-Forwarded-Client-Cert', 'SPOOF']), {
      ...GW,
      xfcc: undefined,
    });
    expect(headers).toEqual([
      'host',
      'gw.test:8443',
      'x-forwarded-for',
      '192.0.2.7',
      'x-forwarded-proto',
      'https',
      'x-forwarded-host',
      'gw.test:8443',
      'x-request-id',
      'rid-1',
    ]);
  });

  it.each<[string]>([
    ['X_Forwarded_Client_Cert'],
    ['X_Auth_User'],
    ['x_forwarded_for'],
    ['Content_Length'],
    ['_'],
    ['a_b'],
  ])('an underscore in a header name (%s) is refused: ERR_REQUEST_BAD_HEADER', (name) => {
    let caught: unknown;
    try {
      buildUpstreamHeaders(raw(['Accept', '*/*'], [name, 'x']), GW);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(GatewayError);
    expect((caught as GatewayError).code).toBe('ERR_REQUEST_BAD_HEADER');
    expect((caught as GatewayError).status).toBe(400);
  });
});

describe('buildUpstreamHeaders: hop-by-hop and Connection nomination (threat model #97, RFC 9110 §7.6.1)', () => {
  it.each<[string, [string, string][], [string, string][]]>([
    [
      'close + XFCC: the client XFCC goes, the gateway XFCC stays',
      [
        ['Connection', 'close, X-Forwarded-Client-Cert'],
        ['X-Forwarded-Client-Cert', 'SPOOF'],
      ],
      [],
    ],
    [
      'keep-alive + a custom header',
      [
        ['Connection', 'keep-alive, X-Custom'],
        ['X-Custom', 'v'],
        ['X-Other', 'o'],
      ],
      [['x-other', 'o']],
    ],
    ['nominating X-Forwarded-For does not remove the gateway XFF', [['Connection', 'X-Forwarded-For']], []],
    [
      'nominating X-Auth-User',
      [
        ['Connection', 'keep-alive, X-Auth-User'],
        ['X-Auth-User', 'SPOOF'],
      ],
      [],
    ],
    [
      'nominating Authorization removes it (the route decides on the original request)',
      [
        ['Connection', 'Authorization'],
        ['Authorization', 'Bearer t'],
      ],
      [],
    ],
    [
      'tokens are case-insensitive and trimmed',
      [
        ['Connection', ' X-A ,,x-B'],
        ['x-a', '1'],
        ['X-B', '2'],
        ['x-c', '3'],
      ],
      [['x-c', '3']],
    ],
    [
      'two Connection lines',
      [
        ['Connection', 'x-a'],
        ['Connection', 'x-b'],
        ['x-a', '1'],
        ['x-b', '2'],
      ],
      [],
    ],
    [
      'the nomination may come after the header it names',
      [
        ['x-a', '1'],
        ['Connection', 'x-a'],
      ],
      [],
    ],
    [
      'Content-Length can be nominated',
      [
        ['Content-Length', '5'],
        ['Connection', 'content-length'],
      ],
      [],
    ],
    [
      'hop-by-hop headers are never forwarded',
      [
        ['Connection', 'keep-alive'],
        ['Keep-Alive', 'timeout=5'],
        ['TE', 'trailers'],
        ['Trailer', 'X-T'],
        ['Proxy-Connection', 'keep-alive'],
        ['Proxy-Authorization', 'Basic dXNlcjpwdw=='],
        ['Proxy-Authenticate', 'Basic'],
        ['Upgrade', 'h2c'],
        ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
        ['Expect', '100-continue'],
        ['Transfer-Encoding', 'chunked'],
      ],
      [],
    ],
    [
      'credentials for the upstream stay: Cookie and Authorization',
      [
        ['Cookie', 'a=b'],
        ['Authorization', 'Bearer t'],
      ],
      [
        ['cookie', 'a=b'],
        ['authorization', 'Bearer t'],
      ],
    ],
    [
      'pseudo-headers are skipped',
      [
        [':method', 'GET'],
        [':path', '/'],
        [':authority', 'gw.test'],
        [':scheme', 'https'],
        ['accept', '*/*'],
      ],
      [['accept', '*/*']],
    ],
    [
      'order and values are kept, names lowercased',
      [
        ['X-B', ' b '],
        ['x-a', 'a\tb'],
        ['X-B', 'c'],
      ],
      [
        ['x-b', ' b '],
        ['x-a', 'a\tb'],
        ['x-b', 'c'],
      ],
    ],
  ])('%s', (_label, input, expected) => {
    const { headers } = buildUpstreamHeaders(raw(...input), GW);
    expect(clientPart(headers)).toEqual(expected);
    expect(count(headers, 'x-forwarded-client-cert')).toBe(1);
    expect(count(headers, 'x-forwarded-for')).toBe(1);
  });

  it('a WebSocket upgrade keeps exactly one Connection: Upgrade / Upgrade: websocket, the gateway pair', () => {
    const { headers } = buildUpstreamHeaders(
      raw(
        ['Connection', 'Upgrade, X-Forwarded-Client-Cert'],
        ['Upgrade', 'websocket'],
        ['Sec-WebSocket-Key', 'k'],
        ['Sec-WebSocket-Version', '13'],
      ),
      { ...GW, upgrade: true },
    );
    expect(count(headers, 'connection')).toBe(1);
    expect(count(headers, 'upgrade')).toBe(1);
    expect(headers).toEqual([
      ...OWN,
      'connection',
      'Upgrade',
      'upgrade',
      'websocket',
      'sec-websocket-key',
      'k',
      'sec-websocket-version',
      '13',
    ]);
  });
});

describe('buildUpstreamHeaders: hasBody', () => {
  it.each<[string, [string, string][], boolean]>([
    ['no framing header', [], false],
    ['Content-Length: 0', [['Content-Length', '0']], false],
    ['Content-Length: 5', [['Content-Length', '5']], true],
    ['Transfer-Encoding: chunked', [['Transfer-Encoding', 'chunked']], true],
  ])('%s → %s', (_label, input, hasBody) => {
    expect(buildUpstreamHeaders(raw(...input), GW).hasBody).toBe(hasBody);
  });
});

describe('x-request-id', () => {
  const idOf = (list: readonly string[]): string[] =>
    list.flatMap((v, i) => (i % 2 === 1 && list[i - 1] === 'x-request-id' ? [v] : []));

  it('keeps one valid client id, sent once among the gateway headers', () => {
    const out = buildUpstreamHeaders(
      raw(['X-Request-Id', '0f8c2b1e-5f3a-4c6e-9d2a-7b1c0e4f5a6b'], ['a', '1']),
      GW,
    );
    expect(idOf(out.headers)).toEqual(['0f8c2b1e-5f3a-4c6e-9d2a-7b1c0e4f5a6b']);
    expect(out.requestId).toBe('0f8c2b1e-5f3a-4c6e-9d2a-7b1c0e4f5a6b');
    expect(out.headers.indexOf('x-request-id')).toBeLessThan(out.gatewayEnd);
  });

  it.each([
    ['absent', []],
    ['empty', [['x-request-id', '']]],
    ['too long', [['x-request-id', 'a'.repeat(129)]]],
    ['a space', [['x-request-id', 'a b']]],
    ['a CR/LF or control byte', [['x-request-id', 'a\u0001b']]],
    ['a quote (log or header injection)', [['x-request-id', 'a"b']]],
    [
      'two headers',
      [
        ['x-request-id', 'one'],
        ['X-Request-ID', 'two'],
      ],
    ],
  ] as [string, [string, string][]][])('replaces an id that is %s with a new one', (_why, pairs) => {
    const out = buildUpstreamHeaders(raw(...pairs), GW);
    expect(idOf(out.headers)).toEqual(['rid-1']);
    expect(out.requestId).toBe('rid-1');
  });
});
