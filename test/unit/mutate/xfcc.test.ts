import { validateHeaderValue } from 'node:http';
import { describe, expect, it } from 'vitest';
import type { PeerIdentity } from '../../../src/identity/peer.js';
import { formatXfcc } from '../../../src/mutate/xfcc.js';

const FP = '0123456789abcdef'.repeat(4);

function peer(overrides: Partial<PeerIdentity> = {}): PeerIdentity {
  return {
    subject: 'CN=client1,OU=dev',
    commonNames: ['client1'],
    organizationalUnits: ['dev'],
    dnsNames: [],
    uris: [],
    fingerprint256: FP,
    serialNumber: '01',
    validToMs: 0,
    ...overrides,
  };
}

describe('formatXfcc', () => {
  it.each<[string, Partial<PeerIdentity>, string]>([
    ['subject only', {}, `Hash=${FP};Subject="CN=client1,OU=dev"`],
    [
      'URIs then DNS names, in certificate order',
      {
        uris: ['spiffe://example.org/ns/a', 'urn:x'],
        dnsNames: ['a.example.com', 'b.example.com'],
      },
      `Hash=${FP};Subject="CN=client1,OU=dev";URI=spiffe://example.org/ns/a;URI=urn:x;` +
        'DNS=a.example.com;DNS=b.example.com',
    ],
    [
      'CR/LF in the CN (threat model #22)',
      { subject: 'CN=line1\r\nX-Injected: yes' },
      `Hash=${FP};Subject="CN=line1%0D%0AX-Injected: yes"`,
    ],
    ['a quote and a backslash in the subject', { subject: 'CN=a\\"b' }, `Hash=${FP};Subject="CN=a\\\\\\"b"`],
    [
      'an escaped comma in the subject',
      { subject: 'CN=evil\\, O=admin' },
      `Hash=${FP};Subject="CN=evil\\\\, O=admin"`,
    ],
    ['unicode', { subject: 'CN=Jürgen 😀' }, `Hash=${FP};Subject="CN=J%C3%BCrgen %F0%9F%98%80"`],
    ['a lone surrogate', { subject: 'CN=\ud800x' }, `Hash=${FP};Subject="CN=%EF%BF%BDx"`],
    ['a percent sign', { subject: 'CN=100%' }, `Hash=${FP};Subject="CN=100%25"`],
    ['NUL and DEL', { subject: 'CN=a\u0000b\u007f' }, `Hash=${FP};Subject="CN=a%00b%7F"`],
    [
      'a URI SAN with ", URI:" stays one quoted value (threat model #20)',
      { uris: ['spiffe://evil.example/x, URI:spiffe://example.org/admin'] },
      `Hash=${FP};Subject="CN=client1,OU=dev";URI="spiffe://evil.example/x, URI:spiffe://example.org/admin"`,
    ],
    [
      'a URI SAN with ";URI=" is quoted',
      { uris: ['urn:a;URI=spiffe://example.org/admin'] },
      `Hash=${FP};Subject="CN=client1,OU=dev";URI="urn:a;URI=spiffe://example.org/admin"`,
    ],
    [
      'a DNS SAN with a quote is quoted and escaped',
      { dnsNames: ['a"b'] },
      `Hash=${FP};Subject="CN=client1,OU=dev";DNS="a\\"b"`,
    ],
    [
      'a DNS SAN with a newline is percent-encoded',
      { dnsNames: ['a\nb'] },
      `Hash=${FP};Subject="CN=client1,OU=dev";DNS=a%0Ab`,
    ],
  ])('%s', (_label, overrides, expected) => {
    const value = formatXfcc(peer(overrides));
    expect(value).toBe(expected);
    expect(() => validateHeaderValue('x-forwarded-client-cert', value)).not.toThrow();
    expect(value).toMatch(/^[\x20-\x7e]+$/);
  });

  it('the same CR/LF value would have thrown unencoded (the test guards a real failure)', () => {
    expect(() => validateHeaderValue('x', 'CN=line1\r\nX-Injected: yes')).toThrow();
  });

  it.each([
    'CN=\r\n',
    'CN=\u2028\u2029',
    'CN=\u0000\u0001\u001f',
    'CN=é"\\;,=%',
    'CN=\udfff\ud800',
    String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i)),
  ])('is a valid header value whatever the subject holds: %j', (subject) => {
    const value = formatXfcc(peer({ subject, uris: [subject], dnsNames: [subject] }));
    expect(() => validateHeaderValue('x-forwarded-client-cert', value)).not.toThrow();
    expect(value).toMatch(/^[\x20-\x7e]+$/);
  });

  it('round-trips: unquote then percent-decode gives the subject back', () => {
    const subject = 'CN=a "q" \\ b, é\n%41';
    const value = formatXfcc(peer({ subject }));
    const quoted = /Subject="((?:[^"\\]|\\.)*)"/.exec(value)?.[1] ?? '';
    expect(decodeURIComponent(quoted.replace(/\\(.)/g, '$1'))).toBe(subject);
  });
});
