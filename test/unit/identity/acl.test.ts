import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { compileClientAcl } from '../../../src/identity/acl.js';
import type { PeerIdentity } from '../../../src/identity/peer.js';

const FP = 'ab'.repeat(32);

function peer(overrides: Partial<PeerIdentity> = {}): PeerIdentity {
  return {
    subject: 'CN=nobody',
    commonNames: ['nobody'],
    organizationalUnits: [],
    dnsNames: [],
    uris: [],
    fingerprint256: '00'.repeat(32),
    serialNumber: '01',
    validToMs: 0,
    ...overrides,
  };
}
const cn = (...commonNames: string[]): PeerIdentity => peer({ commonNames });
const ou = (...organizationalUnits: string[]): PeerIdentity => peer({ organizationalUnits });
const dns = (...dnsNames: string[]): PeerIdentity => peer({ dnsNames });
const uri = (...uris: string[]): PeerIdentity => peer({ uris });

describe('compileClientAcl: fail closed', () => {
  it('an empty list allows nobody', () => {
    const acl = compileClientAcl([], 'listeners[0].allowClients');
    expect(acl.allows(cn('client1'))).toBe(false);
    expect(acl.entries).toEqual([]);
  });

  it('no certificate is never allowed, whatever the list', () => {
    const acl = compileClientAcl(['CN=client1', 'URI=spiffe://example.org/**', 'DNS=*.example.com'], 'x');
    expect(acl.allows(undefined)).toBe(false);
  });

  it('keeps the configured entries', () => {
    const entries = ['CN=a', 'SHA256=' + FP.toUpperCase()];
    expect(compileClientAcl(entries, 'x').entries).toEqual(entries);
  });
});

describe('compileClientAcl: matching', () => {
  it.each<[string, string[], PeerIdentity, boolean]>([
    // CN: exact and byte-wise (threat model #19)
    ['CN exact', ['CN=client1'], cn('client1'), true],
    ['CN among several CNs', ['CN=client1'], cn('other', 'client1'), true],
    ['CN prefix match', ['CN=client1'], cn('client10'), false],
    ['CN case', ['CN=client1'], cn('Client1'), false],
    ['CN trailing space', ['CN=client1'], cn('client1 '), false],
    ['CN with NUL', ['CN=client1'], cn('client1\0x'), false],
    ['CN Cyrillic с (U+0441)', ['CN=client1'], cn('\u0441lient1'), false],
    ['CN substring', ['CN=client1'], cn('lient1'), false],
    ['CN entry matches OU value? no', ['CN=dev'], ou('dev'), false],
    ['CN with comma is compared raw', ['CN=evil, O=admin'], cn('evil, O=admin'), true],
    // OU
    ['OU exact', ['OU=dev'], ou('dev'), true],
    ['OU case', ['OU=dev'], ou('Dev'), false],
    ['OU entry matches CN value? no', ['OU=dev'], cn('dev'), false],
    // DNS
    ['DNS exact', ['DNS=api.example.com'], dns('api.example.com'), true],
    ['DNS exact, case-insensitive', ['DNS=api.example.com'], dns('API.Example.COM'), true],
    ['DNS pattern upper case', ['DNS=API.example.com'], dns('api.example.com'), true],
    ['DNS exact vs sub', ['DNS=example.com'], dns('a.example.com'), false],
    ['DNS wildcard one label', ['DNS=*.example.com'], dns('a.example.com'), true],
    ['DNS wildcard, case', ['DNS=*.example.com'], dns('A.EXAMPLE.com'), true],
    ['DNS wildcard two labels', ['DNS=*.example.com'], dns('a.b.example.com'), false],
    ['DNS wildcard apex', ['DNS=*.example.com'], dns('example.com'), false],
    ['DNS wildcard empty label', ['DNS=*.example.com'], dns('.example.com'), false],
    ['DNS wildcard suffix trick', ['DNS=*.example.com'], dns('a.evilexample.com'), false],
    ['DNS wildcard vs wildcard SAN', ['DNS=*.example.com'], dns('*.example.com'), false],
    ['DNS Kelvin sign does not fold to k', ['DNS=k.example.com'], dns('\u212a.example.com'), false],
    ['DNS any SAN', ['DNS=b.example.com'], dns('a.example.com', 'b.example.com'), true],
    ['DNS: threat model #20 second name', ['DNS=admin.internal'], dns('ok.example', 'admin.internal'), true],
    // URI glob
    ['URI exact', ['URI=spiffe://example.org/ns/a'], uri('spiffe://example.org/ns/a'), true],
    [
      'URI path is case-sensitive',
      ['URI=spiffe://example.org/ns/a'],
      uri('spiffe://example.org/ns/A'),
      false,
    ],
    ['URI * one segment', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns/a'), true],
    ['URI * not two (threat model #23)', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns/a/b'), false],
    ['URI * not zero', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns'), false],
    ['URI * not empty', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns/'), false],
    ['URI * in the middle', ['URI=spiffe://example.org/*/sa/x'], uri('spiffe://example.org/n1/sa/x'), true],
    ['URI ** one', ['URI=spiffe://example.org/ns/**'], uri('spiffe://example.org/ns/a'), true],
    ['URI ** many', ['URI=spiffe://example.org/ns/**'], uri('spiffe://example.org/ns/a/b/c'), true],
    ['URI ** not zero', ['URI=spiffe://example.org/ns/**'], uri('spiffe://example.org/ns'), false],
    ['URI other trust domain', ['URI=spiffe://example.org/**'], uri('spiffe://example.com/a'), false],
    ['URI trust domain suffix', ['URI=spiffe://example.org/**'], uri('spiffe://example.org.evil/a'), false],
    ['URI not on ACL (threat model #18)', ['URI=spiffe://example.org/ns/a'], uri('spiffe://example.org/other'), false],
    ['URI no path', ['URI=spiffe://example.org'], uri('spiffe://example.org'), true],
    ['URI generic https', ['URI=https://svc.example.com/a/*'], uri('https://svc.example.com/a/b'), true],
    [
      'URI generic: scheme/authority case-insensitive',
      ['URI=https://svc.example.com/a/*'],
      uri('HTTPS://SVC.Example.com/a/b'),
      true,
    ],
    [
      'URI generic: path case',
      ['URI=https://svc.example.com/a/*'],
      uri('https://svc.example.com/A/b'),
      false,
    ],
    [
      'URI generic port differs',
      ['URI=https://svc.example.com/a'],
      uri('https://svc.example.com:443/a'),
      false,
    ],
    ['URI generic: several SANs, one matches', ['URI=urn://x/y'], uri('urn://a/b', 'urn://x/y'), true],
    // URI: non-canonical identities never match (threat model #23)
    ['URI upper-case SPIFFE ID', ['URI=spiffe://example.org/ns/*'], uri('SPIFFE://Example.org/ns/a'), false],
    [
      'URI upper-case trust domain',
      ['URI=spiffe://example.org/ns/*'],
      uri('spiffe://Example.org/ns/a'),
      false,
    ],
    ['URI dot-dot', ['URI=spiffe://example.org/ns/**'], uri('spiffe://example.org/ns/a/../admin'), false],
    ['URI dot', ['URI=spiffe://example.org/ns/**'], uri('spiffe://example.org/ns/./a'), false],
    ['URI percent', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns/%61'), false],
    ['URI trailing slash', ['URI=spiffe://example.org/ns/**'], uri('spiffe://example.org/ns/a/'), false],
    ['URI empty segment', ['URI=spiffe://example.org/ns/**'], uri('spiffe://example.org/ns//a'), false],
    ['URI query', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns/a?x=1'), false],
    ['URI query no path', ['URI=spiffe://example.org'], uri('spiffe://example.org?x'), false],
    ['URI fragment', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns/a#b'), false],
    ['URI userinfo', ['URI=spiffe://example.org/ns/*'], uri('spiffe://u@example.org/ns/a'), false],
    ['URI port on SPIFFE', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org:8443/ns/a'), false],
    ['URI generic dot-dot', ['URI=https://h/a/**'], uri('https://h/a/../b'), false],
    ['URI generic percent', ['URI=https://h/a/*'], uri('https://h/a/%62'), false],
    ['URI non-ASCII', ['URI=spiffe://example.org/ns/*'], uri('spiffe://example.org/ns/\u00e9'), false],
    // SPIFFE: exactly one URI SAN (X509-SVID §2)
    [
      'SPIFFE with two URI SANs (threat model #23)',
      ['URI=spiffe://example.org/ns/*'],
      uri('spiffe://example.org/ns/a', 'spiffe://example.org/ns/b'),
      false,
    ],
    [
      'SPIFFE with a non-SPIFFE second URI SAN',
      ['URI=spiffe://example.org/ns/a'],
      uri('spiffe://example.org/ns/a', 'https://x/y'),
      false,
    ],
    [
      'CVE-2021-44532 SAN is one URI and matches neither',
      ['URI=spiffe://example.org/admin'],
      uri('spiffe://evil.example/x, URI:spiffe://example.org/admin'),
      false,
    ],
    // SHA256
    ['SHA256 lower', [`SHA256=${FP}`], peer({ fingerprint256: FP }), true],
    [
      'SHA256 upper with colons',
      [`SHA256=${FP.toUpperCase().replace(/(..)(?!$)/g, '$1:')}`],
      peer({ fingerprint256: FP }),
      true,
    ],
    ['SHA256 other', [`SHA256=${FP}`], peer({ fingerprint256: 'cd'.repeat(32) }), false],
    // OR over entries
    ['OR: second entry matches', ['CN=x', 'OU=ops', 'DNS=a.b'], ou('ops'), true],
    ['OR: none matches', ['CN=x', 'OU=ops', 'DNS=a.b', `SHA256=${FP}`, 'URI=spiffe://e/*'], cn('y'), false],
  ])('%s', (_label, entries, identity, expected) => {
    expect(compileClientAcl(entries, 'allowClients').allows(identity)).toBe(expected);
  });
});

describe('compileClientAcl: malformed entries', () => {
  it.each<[string, string]>([
    ['unknown prefix', 'O=admin'],
    ['lower-case prefix', 'cn=client1'],
    ['no "="', 'client1'],
    ['empty CN', 'CN='],
    ['empty URI', 'URI='],
    ['glob in CN', 'CN=client*'],
    ['glob in OU', 'OU=*'],
    ['trailing space', 'CN=client1 '],
    ['control character', 'CN=a\nb'],
    ['bad hex', 'SHA256=zz' + 'ab'.repeat(31)],
    ['short hex', 'SHA256=abcd'],
    ['DNS partial-label glob', 'DNS=a*.example.com'],
    ['DNS inner glob', 'DNS=a.*.example.com'],
    ['DNS double glob', 'DNS=*.*.example.com'],
    ['DNS bare glob', 'DNS=*'],
    ['DNS empty label', 'DNS=a..example.com'],
    ['DNS trailing dot', 'DNS=example.com.'],
    ['DNS non-ASCII', 'DNS=\u212a.example.com'],
    ['URI partial-segment glob', 'URI=spiffe://x/a*'],
    ['URI ** not last', 'URI=spiffe://x/**/a'],
    ['URI glob in authority', 'URI=spiffe://*.example.org/a'],
    ['URI trailing slash', 'URI=spiffe://example.org/a/'],
    ['URI dot-dot', 'URI=spiffe://example.org/a/../b'],
    ['URI percent', 'URI=spiffe://example.org/%61'],
    ['URI query', 'URI=spiffe://example.org/a?b'],
    ['URI not absolute', 'URI=/ns/a'],
    ['URI SPIFFE upper-case trust domain', 'URI=spiffe://Example.org/a'],
    ['URI SPIFFE upper-case scheme', 'URI=SPIFFE://example.org/a'],
    ['URI SPIFFE port', 'URI=spiffe://example.org:1/a'],
    ['URI userinfo', 'URI=https://u@h/a'],
  ])('%s: %j', (_label, bad) => {
    let caught: unknown;
    try {
      compileClientAcl(['CN=fine', bad], 'routes[2].allowClients');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).path).toBe('routes[2].allowClients[1]');
    expect((caught as ConfigError).value).toBe(bad);
  });
});
