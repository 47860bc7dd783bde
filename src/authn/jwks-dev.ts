/**
 * The development signing key and dev JWTs: what `portcullis certs init` writes (an ES256 key and its public
 * JWKS file, for a `type: jwt` provider with `jwksFile`) and what `portcullis token mint` signs with.
 * Not for production: a production JWT comes from an IdP.
 */
import { randomUUID } from 'node:crypto';
import {
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importJWK,
  importPKCS8,
  SignJWT,
  type CryptoKey,
  type JWK,
} from 'jose';

/** The algorithm of the dev key. */
export const DEV_ALGORITHM = 'ES256';

/**
 * `iss` of every dev token, and the `issuer` of the `dev-jwt` provider of the embedded default config.
 * A name under a domain nobody else issues tokens for, so a dev token can never pass for a real IdP's.
 */
export const DEV_ISSUER = 'https://portcullis.dev/';

/** `aud` of every dev token, and the `audience` of the `dev-jwt` provider of the embedded default config. */
export const DEV_AUDIENCE = 'portcullis-dev';

/** File names `portcullis certs init` writes next to the dev PKI. */
export const DEV_KEY_FILES = {
  /** The ES256 private key, PKCS#8 PEM, mode 0600: what `portcullis token mint` signs with. */
  signingKey: 'jwt-signing-key.pem',
  /** Its public JWKS: the `jwksFile` of the dev provider. */
  jwks: 'jwks.json',
} as const;

/** A fresh dev signing key. */
export interface DevSigningKey {
  /** RFC 7638 thumbprint of the public key: the `kid` in the JWKS and in every token. */
  readonly kid: string;
  /** The private key as a JWK (with `kid`, `alg`, `use`). Keep it secret (file mode 0600). */
  readonly privateJwk: JWK;
  /** The private key as PKCS#8 PEM. */
  readonly privatePem: string;
  /** The public JWKS, `{ keys: [publicJwk] }`: the `jwksFile` of the dev provider. */
  readonly publicJwks: { readonly keys: readonly JWK[] };
}

/** Generates an ES256 key pair with a thumbprint `kid`. */
export async function createDevSigningKey(): Promise<DevSigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(DEV_ALGORITHM, { extractable: true });
  const pub = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(pub);
  const priv = await exportJWK(privateKey);
  return {
    kid,
    privateJwk: { ...priv, kid, alg: DEV_ALGORITHM, use: 'sig' },
    privatePem: await exportPKCS8(privateKey),
    publicJwks: { keys: [{ ...pub, kid, alg: DEV_ALGORITHM, use: 'sig' }] },
  };
}

/** Options of {@link mintDevJwt}. */
export interface MintOptions {
  /** The private key: a JWK from {@link createDevSigningKey} or a PKCS#8 PEM. */
  readonly key: JWK | string;
  readonly issuer: string;
  readonly audience: string | readonly string[];
  readonly sub: string;
  /** Space-separated scopes (RFC 9068 `scope`); omitted when empty. */
  readonly scope?: string;
  readonly ttlSeconds: number;
  /** Epoch ms of issuance. */
  readonly now: number;
  /** Extra claims (cannot override iss, sub, aud, iat, exp, jti). */
  readonly claims?: Readonly<Record<string, unknown>>;
}

/**
 * Signs a dev access token: header `{ alg: ES256, kid, typ: at+jwt }` (RFC 9068), claims iss, sub, aud, iat,
 * exp = iat + ttl, jti, scope, client_id = "portcullis-dev".
 * @throws TypeError for a ttl that is not a positive whole number of seconds, or a key that is not an EC P-256 private key.
 */
export async function mintDevJwt(opts: MintOptions): Promise<string> {
  if (!Number.isInteger(opts.ttlSeconds) || opts.ttlSeconds <= 0)
    throw new TypeError('ttlSeconds: a whole number of seconds > 0');
  let privateKey: CryptoKey;
  let publicJwk: JWK;
  if (typeof opts.key === 'string') {
    privateKey = await importPKCS8(opts.key, DEV_ALGORITHM, { extractable: true });
    publicJwk = publicPart(await exportJWK(privateKey));
  } else {
    if (opts.key.kty !== 'EC' || opts.key.crv !== 'P-256' || typeof opts.key.d !== 'string') {
      throw new TypeError('key: an EC P-256 private JWK');
    }
    privateKey = (await importJWK(opts.key, DEV_ALGORITHM)) as CryptoKey;
    publicJwk = publicPart(opts.key);
  }
  const kid = await calculateJwkThumbprint(publicJwk);
  const iat = Math.floor(opts.now / 1000);
  return new SignJWT({
    client_id: 'portcullis-dev',
    ...(opts.claims ?? {}),
    ...(opts.scope !== undefined && opts.scope !== '' ? { scope: opts.scope } : {}),
  })
    .setProtectedHeader({ alg: DEV_ALGORITHM, kid, typ: 'at+jwt' })
    .setIssuer(opts.issuer)
    .setSubject(opts.sub)
    .setAudience(typeof opts.audience === 'string' ? opts.audience : [...opts.audience])
    .setIssuedAt(iat)
    .setExpirationTime(iat + opts.ttlSeconds)
    .setJti(randomUUID())
    .sign(privateKey);
}

/**
 * The public JWKS of a dev private key (PKCS#8 PEM), with the same thumbprint `kid` as
 * {@link createDevSigningKey}: for a certs dir whose `jwks.json` went missing.
 * @throws when the PEM is not an EC P-256 private key.
 */
export async function devJwksFromPrivatePem(pem: string): Promise<{ readonly keys: readonly JWK[] }> {
  const privateKey = await importPKCS8(pem, DEV_ALGORITHM, { extractable: true });
  const pub = publicPart(await exportJWK(privateKey));
  const kid = await calculateJwkThumbprint(pub);
  return { keys: [{ ...pub, kid, alg: DEV_ALGORITHM, use: 'sig' }] };
}

function publicPart(jwk: JWK): JWK {
  const { kty, crv, x, y } = jwk;
  return { kty, crv, x, y } as JWK;
}
