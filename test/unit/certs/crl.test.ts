/**
 * certs/crl.ts: a `tls.crl` file of several PEM CRLs, one per CA of the client CA bundle. Each CRL is
 * split out, matched to the CA that signed it (name, then signature: two CAs may share a name), checked
 * for freshness; a CA left without a CRL, a CRL of a stranger, a broken or stale CRL are problems that
 * name the file and which CRL. CAs and CRLs are minted per run (RSA through src/certs/pki.ts; ECDSA,
 * RSA-PSS and Ed25519 through the openssl CLI when it is there).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, createCrl, issueClientCert, type CertAndKey } from '../../../src/certs/pki.js';
import { readCrlFile } from '../../../src/certs/crl.js';
import { mintTestPki } from '../../helpers/pki.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const FILE = '/etc/portcullis/clients.crl';

let a: CertAndKey;
let b: CertAndKey;
let crlA: string;
let crlB: string;
let revokedA: string;
let revokedB: string;
/** The load time the checks run at: after the CRLs were made (their thisUpdate is the time they were made). */
let now = 0;

beforeAll(() => {
  a = createCa({ commonName: 'Team A CA', days: 30 });
  b = createCa({ commonName: 'Team B CA', days: 30 });
  revokedA = issueClientCert(a, { commonName: 'ra', days: 2 }).serialHex;
  revokedB = issueClientCert(b, { commonName: 'rb', days: 2 }).serialHex;
  const at = new Date(Date.now() - 60_000);
  crlA = createCrl(a, { revoked: [{ serialHex: revokedA, revokedAt: at }], crlNumber: 3, days: 7 });
  crlB = createCrl(b, { revoked: [{ serialHex: revokedB, revokedAt: at }], crlNumber: 5, days: 9 });
  now = Date.now();
});

const x509 = (...cas: CertAndKey[]): X509Certificate[] => cas.map((c) => new X509Certificate(c.certPem));

describe('readCrlFile: good files', () => {
  it('one CRL for a one-CA bundle: its nextUpdate and serials', () => {
    const r = readCrlFile(crlA, FILE, x509(a), now);
    expect(r.problems).toEqual([]);
    expect(r.crls).toHaveLength(1);
    expect(r.crls[0]).toMatchObject({ index: 0, caIndex: 0, issuer: 'CN=Team A CA', revoked: [revokedA] });
    expect(r.crls[0]?.nextUpdateMs).toBeGreaterThan(now + 6 * DAY_MS);
    expect(r.crls[0]?.pem.toString()).toBe(crlA.trim());
  });

  it('two CRLs concatenated, in either order: each split out and matched to its CA', () => {
    for (const [text, order] of [
      [crlA + crlB, [0, 1]],
      [`${crlB}\n# comment between blocks\n${crlA}`, [1, 0]],
    ] as const) {
      const r = readCrlFile(text, FILE, x509(a, b), now);
      expect(r.problems).toEqual([]);
      expect(r.crls.map((c) => [c.index, c.caIndex])).toEqual([
        [0, order[0]],
        [1, order[1]],
      ]);
      expect(r.crls.flatMap((c) => c.revoked).sort()).toEqual([revokedA, revokedB].sort());
      expect(r.crls.map((c) => c.pem.toString())).toEqual((order[0] === 0 ? [crlA, crlB] : [crlB, crlA]).map((p) => p.trim()));
    }
  });

  it('two CAs with the same name (the test PKI): the signature tells which CRL is whose', () => {
    const pki = mintTestPki();
    const otherCrl = createCrl(pki.otherCa, { revoked: [], crlNumber: 1, days: 3 });
    const r = readCrlFile(otherCrl + pki.crlPem, FILE, x509(pki.ca, pki.otherCa), Date.now());
    expect(r.problems).toEqual([]);
    expect(r.crls.map((c) => c.caIndex)).toEqual([1, 0]);
    expect(r.crls[1]?.revoked).toEqual([pki.clients.revoked.serialHex]);
  });
});

describe('readCrlFile: every problem names the file and which CRL', () => {
  it.each<[string, () => [string, X509Certificate[]], RegExp]>([
    ['an empty file', () => ['', x509(a)], /^a PEM X\.509 CRL \(\/etc\/portcullis\/clients\.crl has none\)$/],
    ['a certificate instead of a CRL', () => [a.certPem, x509(a)], /holds a "CERTIFICATE" block; X509 CRL blocks only/],
    ['a certificate after the CRLs', () => [crlA + b.certPem, x509(a)], /holds a "CERTIFICATE" block/],
    [
      'a second CRL that does not parse',
      () => [`${crlA}-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n`, x509(a)],
      /^a PEM X\.509 CRL \(CRL #2 of 2 in \/etc\/portcullis\/clients\.crl does not parse\)$/,
    ],
    [
      'a CRL of a CA outside the bundle',
      () => [crlA + crlB, x509(a)],
      /^a CRL issued by a CA of the client CA bundle \(CRL #2 of 2 in .* is issued by "CN=Team B CA", which is none of them\)$/,
    ],
    [
      'a CRL signed by another key under the bundle CA name',
      () => {
        const pki = mintTestPki();
        return [createCrl(pki.otherCa, { revoked: [], crlNumber: 1, days: 3 }), x509(pki.ca)];
      },
      /^a CRL signed by its issuer \(the signature of \/etc\/portcullis\/clients\.crl does not verify with the key of the client CA "CN=Portcullis Test CA"/,
    ],
    [
      'two CRLs from the same CA',
      () => [crlA + createCrl(a, { revoked: [], crlNumber: 4, days: 7 }), x509(a)],
      /^one CRL per CA \(CRL #2 of 2 in .* and CRL #1 are both from client CA #1 "CN=Team A CA"/,
    ],
    [
      'a CA of the bundle without a CRL',
      () => [crlA, x509(a, b)],
      /^a CRL for every CA of the client CA bundle \(client CA #2 "CN=Team B CA" has none in \/etc\/portcullis\/clients\.crl; OpenSSL checks/,
    ],
    [
      'a second CRL past its nextUpdate',
      () => [
        crlA +
          createCrl(b, { revoked: [], crlNumber: 1, thisUpdate: new Date(now - 2 * DAY_MS), nextUpdate: new Date(now - DAY_MS) }),
        x509(a, b),
      ],
      /^a current CRL \(its nextUpdate passed at .* for CRL #2 of 2 in .*; OpenSSL would refuse every client of "CN=Team B CA": re-sign it\)$/,
    ],
    [
      'a CRL not valid yet (thisUpdate ahead of the clock)',
      () => [createCrl(a, { revoked: [], crlNumber: 1, thisUpdate: new Date(now + DAY_MS), days: 3 }), x509(a)],
      /^a current CRL \(\/etc\/portcullis\/clients\.crl is not valid before /,
    ],
  ])('%s', (_name, input, problem) => {
    const [text, cas] = input();
    const r = readCrlFile(text, FILE, cas, now);
    expect(r.crls).toEqual([]);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatch(problem);
  });

  it('a lone stale CRL keeps the wording of before', () => {
    const stale = createCrl(a, { revoked: [], crlNumber: 1, thisUpdate: new Date(now - 2 * DAY_MS), nextUpdate: new Date(now - DAY_MS) });
    expect(readCrlFile(stale, FILE, x509(a), now).problems).toEqual([
      expect.stringMatching(/^a current CRL \(its nextUpdate passed at .*Z; OpenSSL would refuse every client: re-sign it\)$/),
    ]);
  });
});

describe('readCrlFile: CRLs signed with ECDSA, RSA-PSS and Ed25519 (openssl CLI)', () => {
  let dir: string;
  let openssl = true;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'portcullis-crl-'));
    try {
      execFileSync('openssl', ['version'], { stdio: 'pipe' });
    } catch {
      openssl = false;
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A self-signed CA of `keyArgs` and an empty CRL it signs with `sigopts`. */
  function opensslCa(name: string, keyArgs: string[], md: string, sigopts: string[] = []): { ca: string; crl: string } {
    const run = (args: string[]): void => {
      execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    };
    run(['req', '-x509', ...keyArgs, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-subj', `/CN=${name} CA`, '-days', '2']);
    writeFileSync(join(dir, 'index.txt'), '');
    writeFileSync(join(dir, 'ca.cnf'), `[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ndefault_md=${md}\ndefault_crl_days=2\n`);
    run(['ca', '-config', 'ca.cnf', '-gencrl', '-keyfile', `${name}.key`, '-cert', `${name}.pem`, '-out', `${name}.crl`, ...sigopts]);
    return { ca: readFileSync(join(dir, `${name}.pem`), 'latin1'), crl: readFileSync(join(dir, `${name}.crl`), 'latin1') };
  }

  it('each verifies against its own CA, and not against another', (ctx) => {
    if (!openssl) {
      console.log('skipped: the openssl CLI is not available');
      ctx.skip();
    }
    const ec = opensslCa('ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'sha384');
    const pss = opensslCa('pss', ['-newkey', 'rsa:2048'], 'sha256', ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32']);
    const ed = opensslCa('ed', ['-newkey', 'ed25519'], 'default');
    const cas = [ec.ca, pss.ca, ed.ca, a.certPem].map((p) => new X509Certificate(p));
    const r = readCrlFile(ec.crl + pss.crl + ed.crl + crlA, FILE, cas, Date.now());
    expect(r.problems).toEqual([]);
    expect(r.crls.map((c) => c.caIndex)).toEqual([0, 1, 2, 3]);
    // The same CRLs under a CA of the same name and another key: refused.
    const impostor = opensslCa('ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'sha256');
    const bad = readCrlFile(ec.crl, FILE, [new X509Certificate(impostor.ca)], Date.now());
    expect(bad.problems[0]).toMatch(/does not verify with the key of the client CA "CN=ec CA"/);
  });
});
