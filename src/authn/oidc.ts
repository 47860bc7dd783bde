/**
 * `type: oidc`: browser single sign-on (OpenID Connect authorization code flow with PKCE S256), and the
 * sessions it makes. The protocol work is panva's oauth4webapi (discovery, the authorization response, the
 * token endpoint calls and their field-by-field checks); the ID token's signature is also verified here with
 * jose against the IdP's JWKS (oauth4webapi trusts the TLS channel for it, OIDC Core §3.1.3.7), and so is a
 * back-channel logout token (OpenID Back-Channel Logout 1.0 §2.6).
 *
 * As an {@link Authenticator} it reads session credentials only (`not_applicable` to a Bearer token, so a
 * route's Bearer providers keep working next to it). A session is refreshed shortly before its access token
 * expires, one refresh per session at a time (concurrent requests share it), honouring refresh-token
 * rotation. Fail closed: a refresh the IdP refuses ends the session; an IdP that cannot be reached is a 503
 * once the access token has expired, never a pass.
 *
 * The login operations ({@link LoginProvider}) return plain results (a location and cookies); the gateway
 * endpoints (endpoints/login.ts) turn them into answers.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { decodeJwt, errors as joseErrors, importPKCS8, jwtVerify, type JWTPayload } from 'jose';
import * as oauth from 'oauth4webapi';
import { monotonicMs } from '../clock.js';
import { ConfigError, GatewayError } from '../errors.js';
import { createMemoryStore } from '../store/memory.js';
import type { KeyValueStore } from '../store/store.js';
import { tokenHash } from './bearer.js';
import type { Credential } from './credential.js';
import { describeFetchError } from './http.js';
import { createRemoteKeySource, KeySourceUnavailable, type KeySource } from './jwks.js';
import { isLoopbackHost } from '../policy/loopback.js';
import type { OidcProviderConfig } from './provider-config.js';
import type { LoginResult, LogoutKind, RefreshResult } from '../observability/auth-stats.js';
import {
  parseScope,
  resolveDeps,
  type Authenticator,
  type AuthnDeps,
  type AuthnResult,
  type Principal,
} from './principal.js';
import { clearCookie, LOGIN_COOKIE, newCookieId, SESSION_COOKIE, setCookie } from './session-cookie.js';
import { createSessionStore, type SessionRecord, type SessionStore } from './sessions.js';


/** Where a login happens: the listener and the origin (`https://host[:port]`) the browser talks to. */
export interface LoginSite {
  readonly listener: string;
  readonly origin: string;
}

/** A step of the login: where the browser goes next and the cookies it gets. */
export interface LoginStep {
  readonly location: string;
  readonly cookies: readonly string[];
}

/** The login operations of a `type: oidc` provider (the gateway endpoints call them). */
export interface LoginProvider extends Authenticator {
  /**
   * Starts a login: a pre-login record (state, nonce, PKCE verifier, where to return) and the IdP's
   * authorization URL. `returnTo` must already be a same-origin path (endpoints/login.ts checks it).
   * @throws GatewayError `ERR_AUTHN_UNAVAILABLE` when discovery fails.
   */
  beginLogin(site: LoginSite, returnTo: string): Promise<LoginStep>;
  /**
   * The callback: checks the pre-login cookie's record (one use), the authorization response, exchanges the
   * code, verifies the ID token, creates the session.
   * @throws GatewayError `ERR_LOGIN_BAD_STATE`, `ERR_LOGIN_REJECTED` or `ERR_AUTHN_UNAVAILABLE`.
   */
  finishLogin(site: LoginSite, query: URLSearchParams, loginCookie: string | undefined): Promise<LoginStep>;
  /** Ends the session of `sessionId` (if any, and if it is this site's); RP-initiated logout when offered. */
  logout(site: LoginSite, sessionId: string | undefined, loggedOutUrl: string): Promise<LoginStep>;
  /**
   * OpenID Back-Channel Logout: verifies `logoutToken` and ends every session of its `sid` (or `sub`).
   * Returns how many sessions ended.
   * @throws GatewayError `ERR_LOGOUT_BAD_TOKEN` or `ERR_AUTHN_UNAVAILABLE`.
   */
  backchannelLogout(logoutToken: string): Promise<number>;
  /** Whether this provider holds the pre-login record of a pre-login cookie. */
  ownsLogin(loginCookie: string): Promise<boolean>;
  /** Whether a token's `iss` is this provider's issuer (to pick the provider of a logout token). */
  issuedBy(iss: string): boolean;
  /** Live sessions now. */
  activeSessions(): Promise<number>;
}

/** Whether `a` is a {@link LoginProvider}. */
export function isLoginProvider(a: Authenticator | undefined): a is LoginProvider {
  return a !== undefined && a.type === 'oidc' && 'beginLogin' in a;
}

/** Side effects of the provider besides {@link AuthnDeps}. */
export interface OidcDeps extends AuthnDeps {
  /** Where sessions live; default a bounded memory store of its own. */
  readonly store?: KeyValueStore;
}

/** What the IdP said, ready to use. */
interface IdpRuntime {
  readonly as: oauth.AuthorizationServer;
  readonly clientAuth: oauth.ClientAuth;
  readonly keys: KeySource;
}

/** The pre-login record (under `login:<name>:<hash of the pre-login cookie>`). */
interface LoginRecord {
  readonly state: string;
  readonly nonce: string;
  readonly verifier: string;
  readonly returnTo: string;
  readonly listener: string;
  readonly origin: string;
}

/** First wait after a failed discovery: 1 s, doubling to 30 s (an IdP that is down is not asked per request). */
const DISCOVERY_BACKOFF_MS = [1_000, 30_000] as const;

/** A refresh lock lives the IdP call's timeout plus this: 1 s (then another replica may try). */
const REFRESH_LOCK_MARGIN_MS = 1_000;
/** How often a replica waiting for another's refresh reads the session again: 50 ms. */
const REFRESH_POLL_MS = 50;

/** A store operation whose failure is `ERR_STORE_UNAVAILABLE` (503), never a pass and never a 500. */
function viaStore<T>(p: Promise<T>): Promise<T> {
  return p.catch((err: unknown) => {
    if (err instanceof GatewayError) throw err;
    throw new GatewayError('ERR_STORE_UNAVAILABLE', err instanceof Error ? err.message : 'store failed', { cause: err });
  });
}

/** The signature algorithm a private key signs its client assertion with. */
function assertionAlg(key: KeyObject): string {
  const type = key.asymmetricKeyType;
  if (type === 'rsa') return 'RS256';
  if (type === 'ed25519') return 'EdDSA';
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ES256';
    if (curve === 'secp384r1') return 'ES384';
    if (curve === 'secp521r1') return 'ES512';
  }
  throw new Error(`a key of type ${type ?? 'unknown'} cannot sign a client assertion`);
}

/**
 * Creates a `type: oidc` provider. Reads its secret or key file now; discovery runs on warmUp or first use.
 * @throws ConfigError naming `authProviders.<name>.<key>` when the secret or key is unusable.
 */
export function createOidcProvider(name: string, config: OidcProviderConfig, deps: OidcDeps): LoginProvider {
  const d = resolveDeps(deps);
  const keyPath = `authProviders.${name}`;
  const issuerUrl = new URL(config.issuer);
  const insecure = issuerUrl.protocol === 'http:' && isLoopbackHost(issuerUrl.hostname);
  let secret: string | undefined;
  let privateKeyPem: string | undefined;
  let signingAlg = '';
  if (config.clientSecretFile !== undefined) {
    try {
      secret = d.readFile(config.clientSecretFile).replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError(`${keyPath}.clientSecretFile`, config.clientSecretFile, 'a readable file', { cause: err });
    }
    if (secret === '')
      throw new ConfigError(`${keyPath}.clientSecretFile`, config.clientSecretFile, 'a file holding the client secret (it is empty)');
  } else if (config.privateKeyFile !== undefined) {
    try {
      privateKeyPem = d.readFile(config.privateKeyFile);
      signingAlg = assertionAlg(createPrivateKey(privateKeyPem));
    } catch (err) {
      const why = err instanceof Error ? err.message : 'unreadable';
      throw new ConfigError(`${keyPath}.privateKeyFile`, config.privateKeyFile, `a PKCS#8 PEM private key (${why})`, {
        cause: err,
      });
    }
  }
  // Each session holds up to three keys (itself, its sid and sub indexes): room for maxSessions of them.
  const store =
    deps.store ?? deps.shared?.kv ?? createMemoryStore({ maxEntries: config.session.maxSessions * 3 }, { clock: d.clock });
  // Pre-login records: a store of their own unless one is shared (see maxPendingLogins). Seen logout-token
  // jtis stay with the sessions: only a token the IdP signed adds one.
  const pendingStore =
    deps.store ??
    deps.shared?.kv ??
    createMemoryStore({ maxEntries: config.session.maxPendingLogins }, { clock: d.clock });
  // Replicas share sessions through Redis: a refresh is then serialized across them by a lock in the store.
  const acrossReplicas = deps.shared !== undefined;
  const whenUnavailable = deps.shared?.whenUnavailable ?? 'no-session';
  const sessions: SessionStore = createSessionStore(
    name,
    store,
    { idleMs: config.session.idleTimeoutSeconds * 1000, absoluteMs: config.session.absoluteTimeoutSeconds * 1000 },
    d.clock,
  );
  const observer = {
    login: (p: string, r: LoginResult) => d.observer.login?.(p, r),
    refresh: (p: string, r: RefreshResult) => d.observer.refresh?.(p, r),
    logout: (p: string, k: LogoutKind, n: number) => d.observer.logout?.(p, k, n),
  };
  const client: oauth.Client = {
    client_id: config.clientId,
    [oauth.clockTolerance]: config.clockToleranceSeconds,
  };
  // Every IdP call: the injected fetch, a timeout, and plain http only to a loopback issuer.
  const http = () => ({
    signal: AbortSignal.timeout(config.timeoutMs),
    [oauth.customFetch]: (url: string, init: object) => d.fetch(url, init),
    // Deprecated to make it stand out: here only for an issuer on a loopback address (endpointUrlSchema).
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    ...(insecure ? { [oauth.allowInsecureRequests]: true } : {}),
  });
  const loginTtlMs = config.loginTimeoutSeconds * 1000;
  const refreshBeforeMs = config.refreshBeforeSeconds * 1000;
  let idpRequests = 0;
  let idpFailures = 0;

  // Discovery: one in flight, kept once it succeeded; after a failure, none before the backoff has passed.
  let runtime: IdpRuntime | undefined;
  let pending: Promise<IdpRuntime> | undefined;
  let failures = 0;
  let retryAtMs = 0;
  let lastError = 'discovery not done yet';

  async function discover(): Promise<IdpRuntime> {
    idpRequests++;
    try {
      const res = await oauth.discoveryRequest(issuerUrl, { algorithm: 'oidc', ...http() });
      const as = await oauth.processDiscoveryResponse(issuerUrl, res);
      if (as.authorization_endpoint === undefined || as.token_endpoint === undefined || as.jwks_uri === undefined)
        throw new Error('the discovery document lacks authorization_endpoint, token_endpoint or jwks_uri');
      const methods = as.code_challenge_methods_supported;
      if (methods !== undefined && !methods.includes('S256'))
        throw new Error('the IdP does not support PKCE S256');
      let clientAuth: oauth.ClientAuth;
      if (privateKeyPem !== undefined) {
        const key = await importPKCS8(privateKeyPem, signingAlg);
        clientAuth = oauth.PrivateKeyJwt(
          config.privateKeyId !== undefined ? { key, kid: config.privateKeyId } : key,
        );
      } else {
        const s = secret ?? '';
        clientAuth = config.authMethod === 'client_secret_post' ? oauth.ClientSecretPost(s) : oauth.ClientSecretBasic(s);
      }
      const keys = createRemoteKeySource(
        new URL(as.jwks_uri),
        { timeoutMs: config.timeoutMs, cooldownMs: 30_000, maxAgeMs: 600_000 },
        d,
        name,
      );
      failures = 0;
      return { as, clientAuth, keys };
    } catch (err) {
      idpFailures++;
      failures++;
      const wait = Math.min(DISCOVERY_BACKOFF_MS[0] * 2 ** (failures - 1), DISCOVERY_BACKOFF_MS[1]);
      retryAtMs = monotonicMs(d.clock) + wait;
      lastError = `discovery failed: ${describeFetchError(err)}`;
      d.logger.warn({ provider: name, err: lastError }, 'oidc discovery failed');
      throw new GatewayError('ERR_AUTHN_UNAVAILABLE', `${name}: ${lastError}`, { cause: err });
    }
  }

  function idp(): Promise<IdpRuntime> {
    if (runtime !== undefined) return Promise.resolve(runtime);
    if (pending !== undefined) return pending;
    if (monotonicMs(d.clock) < retryAtMs)
      return Promise.reject(new GatewayError('ERR_AUTHN_UNAVAILABLE', `${name}: ${lastError} (backing off)`));
    pending = discover().then(
      (rt) => {
        runtime = rt;
        pending = undefined;
        return rt;
      },
      (err: unknown) => {
        pending = undefined;
        throw err;
      },
    );
    return pending;
  }

  /** A failure of an IdP call, as a GatewayError: the IdP refused (rejected) or could not answer (unavailable). */
  function idpError(err: unknown, what: string, refused: 'ERR_LOGIN_REJECTED' | 'ERR_AUTHN_SESSION_ENDED'): GatewayError {
    if (err instanceof GatewayError) return err;
    if (err instanceof oauth.ResponseBodyError || err instanceof oauth.AuthorizationResponseError)
      return new GatewayError(refused, `${name}: ${what}: the IdP answered ${err.error}`);
    if (err instanceof oauth.OperationProcessingError && err.code !== oauth.RESPONSE_IS_NOT_CONFORM)
      return new GatewayError(refused, `${name}: ${what}: ${err.message}`);
    if (err instanceof KeySourceUnavailable) return new GatewayError('ERR_AUTHN_UNAVAILABLE', `${name}: ${err.message}`);
    if (err instanceof joseErrors.JOSEError) return new GatewayError(refused, `${name}: ${what}: ${err.code}`);
    idpFailures++;
    return new GatewayError('ERR_AUTHN_UNAVAILABLE', `${name}: ${what}: ${describeFetchError(err)}`, { cause: err });
  }

  /** Verifies an ID token's signature, issuer and audience (oauth4webapi checked the rest, nonce included). */
  async function verifyIdToken(rt: IdpRuntime, idToken: string): Promise<JWTPayload> {
    const { payload } = await jwtVerify(idToken, rt.keys.getKey, {
      algorithms: [...config.algorithms],
      issuer: rt.as.issuer,
      audience: config.clientId,
      requiredClaims: ['sub', 'exp', 'iat'],
      clockTolerance: config.clockToleranceSeconds,
      currentDate: new Date(d.clock.now()),
    });
    return payload;
  }

  function principalOf(r: SessionRecord): Principal {
    // Without a refresh token the session cannot outlive its access token (fail closed).
    const end =
      r.refreshToken === undefined && r.accessExpiresAtMs !== undefined
        ? Math.min(r.absoluteExpiresAtMs, r.accessExpiresAtMs)
        : r.absoluteExpiresAtMs;
    const azp = r.claims.azp;
    return {
      subject: r.sub,
      scopes: r.scopes,
      provider: name,
      ...(typeof azp === 'string' ? { clientId: azp } : {}),
      // Frozen as the Principal contract says (a record read back from the store is a fresh object).
      claims: Object.freeze({ ...r.claims }),
      expiresAtMs: end,
    };
  }

  /** The record after a token response: new tokens, rotated refresh token kept, claims from a new ID token. */
  function withTokens(
    r: Omit<SessionRecord, 'accessToken' | 'accessExpiresAtMs' | 'refreshToken' | 'scopes'> & Partial<SessionRecord>,
    tokens: oauth.TokenEndpointResponse,
    claims: Readonly<Record<string, unknown>> | undefined,
  ): SessionRecord {
    const now = d.clock.now();
    return {
      ...r,
      v: 1,
      claims: claims ?? r.claims,
      scopes: parseScope(tokens.scope) ?? r.scopes ?? [],
      accessToken: tokens.access_token,
      accessExpiresAtMs: typeof tokens.expires_in === 'number' ? now + tokens.expires_in * 1000 : undefined,
      refreshToken: tokens.refresh_token ?? r.refreshToken,
      idToken: tokens.id_token ?? r.idToken,
    };
  }

  const refreshing = new Map<string, Promise<SessionRecord>>();

  /**
   * A refresh shared by every replica: the one that takes the lock (a key with a short lease) calls the IdP;
   * the others wait for the record it saves. With refresh-token rotation a second call with the old refresh
   * token would be refused and end the session, so two replicas must not both call.
   */
  async function refreshLocked(hash: string, r: SessionRecord): Promise<SessionRecord> {
    const lock = `lock:refresh:${name}:${hash}`;
    const owner = newCookieId();
    const leaseMs = config.timeoutMs + REFRESH_LOCK_MARGIN_MS;
    if (await viaStore(store.add(lock, owner, leaseMs))) {
      try {
        // Another replica may have refreshed between this request's read and the lock.
        const current = (await viaStore(sessions.use(hash))).record;
        if (current === undefined) throw new GatewayError('ERR_AUTHN_SESSION_ENDED', `${name}: session ended`);
        if (current.accessToken !== r.accessToken) return current;
        return await refresh(hash, current);
      } finally {
        await store.deleteIfEquals(lock, owner).catch(() => undefined);
      }
    }
    for (let waited = 0; waited < leaseMs; waited += REFRESH_POLL_MS) {
      await new Promise((resolve) => setTimeout(resolve, REFRESH_POLL_MS));
      const current = (await viaStore(sessions.use(hash))).record;
      if (current === undefined) throw new GatewayError('ERR_AUTHN_SESSION_ENDED', `${name}: session ended during a refresh`);
      if (current.accessToken !== r.accessToken) return current;
    }
    // The other replica's refresh did not finish within its lease: the current token while it lives.
    if (r.accessExpiresAtMs !== undefined && r.accessExpiresAtMs > d.clock.now()) return r;
    throw new GatewayError('ERR_AUTHN_UNAVAILABLE', `${name}: a refresh on another replica did not finish`);
  }

  async function refresh(hash: string, r: SessionRecord): Promise<SessionRecord> {
    const rt = await idp();
    idpRequests++;
    let tokens: oauth.TokenEndpointResponse;
    let claims: Readonly<Record<string, unknown>> | undefined;
    try {
      const res = await oauth.refreshTokenGrantRequest(rt.as, client, rt.clientAuth, r.refreshToken ?? '', http());
      tokens = await oauth.processRefreshTokenResponse(rt.as, client, res);
      if (tokens.id_token !== undefined) {
        const payload = await verifyIdToken(rt, tokens.id_token);
        // OIDC Core §12.2: a refreshed ID token is about the same person.
        if (payload.sub !== r.sub) throw new GatewayError('ERR_AUTHN_SESSION_ENDED', `${name}: refresh changed sub`);
        claims = Object.freeze({ ...payload });
      }
    } catch (err) {
      const gerr = idpError(err, 'refresh', 'ERR_AUTHN_SESSION_ENDED');
      if (gerr.code === 'ERR_AUTHN_UNAVAILABLE') {
        observer.refresh(name, 'unavailable');
        // The IdP is down: the session keeps its current token while that is still valid.
        if (r.accessExpiresAtMs !== undefined && r.accessExpiresAtMs > d.clock.now()) return r;
        throw gerr;
      }
      observer.refresh(name, 'failure');
      await viaStore(sessions.end(hash));
      observer.logout(name, 'refresh_failed', 1);
      d.logger.info({ provider: name, session: hash.slice(0, 12), reason: gerr.detail }, 'session ended: refresh refused');
      throw gerr;
    }
    const next = withTokens(r, tokens, claims);
    await viaStore(sessions.save(hash, next));
    observer.refresh(name, 'success');
    return next;
  }

  function refreshOnce(hash: string, r: SessionRecord): Promise<SessionRecord> {
    let p = refreshing.get(hash);
    if (p === undefined) {
      p = (acrossReplicas ? refreshLocked(hash, r) : refresh(hash, r)).finally(() => refreshing.delete(hash));
      refreshing.set(hash, p);
    }
    return p;
  }

  async function authenticateSession(hash: string, site: LoginSite): Promise<Principal> {
    const ended = (why: string): GatewayError => new GatewayError('ERR_AUTHN_SESSION_ENDED', `${name}: ${why}`);
    let found: Awaited<ReturnType<SessionStore['use']>>;
    try {
      found = await sessions.use(hash);
    } catch (err) {
      // The store never fails open: a session that cannot be read is no session, or a 503 when so configured.
      const why = `session store: ${err instanceof Error ? err.message : 'failed'}`;
      if (whenUnavailable === 'service-unavailable') throw new GatewayError('ERR_STORE_UNAVAILABLE', `${name}: ${why}`);
      throw ended(why);
    }
    if (found.ended !== undefined) {
      observer.logout(name, 'timeout', 1);
      throw ended(`session ${found.ended} timeout`);
    }
    let r = found.record;
    if (r === undefined) throw ended('no such session');
    // A cookie presented to another listener (cookies do not isolate ports) or another host is not a session here.
    if (r.listener !== site.listener || r.origin !== site.origin) throw ended('session of another listener or origin');
    const exp = r.accessExpiresAtMs;
    if (exp !== undefined && exp - refreshBeforeMs <= d.clock.now()) {
      if (r.refreshToken !== undefined) r = await refreshOnce(hash, r);
      else if (exp <= d.clock.now()) {
        await viaStore(sessions.end(hash));
        observer.logout(name, 'timeout', 1);
        throw ended('access token expired and there is no refresh token');
      }
    }
    return principalOf(r);
  }

  async function beginLogin(site: LoginSite, returnTo: string): Promise<LoginStep> {
    const rt = await idp();
    const id = newCookieId();
    const record: LoginRecord = {
      state: oauth.generateRandomState(),
      nonce: oauth.generateRandomNonce(),
      verifier: oauth.generateRandomCodeVerifier(),
      returnTo,
      listener: site.listener,
      origin: site.origin,
    };
    const url = new URL(rt.as.authorization_endpoint ?? '');
    url.searchParams.set('client_id', config.clientId);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('redirect_uri', `${site.origin}/_portcullis/callback`);
    url.searchParams.set('scope', config.scopes.join(' '));
    url.searchParams.set('state', record.state);
    url.searchParams.set('nonce', record.nonce);
    url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(record.verifier));
    url.searchParams.set('code_challenge_method', 'S256');
    // RFC 8414 prompt=consent is how an OpenID provider is asked for a refresh token (OIDC Core §11).
    if (config.scopes.includes('offline_access')) url.searchParams.set('prompt', 'consent');
    await viaStore(pendingStore.set(`login:${name}:${tokenHash(id)}`, JSON.stringify(record), loginTtlMs));
    return { location: url.href, cookies: [setCookie(LOGIN_COOKIE, id, config.loginTimeoutSeconds)] };
  }

  async function finishLogin(site: LoginSite, query: URLSearchParams, loginCookie: string | undefined): Promise<LoginStep> {
    const bad = (why: string): GatewayError => new GatewayError('ERR_LOGIN_BAD_STATE', `${name}: ${why}`);
    try {
      if (loginCookie === undefined) throw bad('no pre-login cookie');
      const key = `login:${name}:${tokenHash(loginCookie)}`;
      const text = await viaStore(pendingStore.get(key));
      if (text === undefined) throw bad('no pre-login record (expired, used, or never made)');
      // One use: a replayed callback finds nothing (and of two racing callbacks, only the one that deleted it).
      if (!(await viaStore(pendingStore.delete(key)))) throw bad('pre-login record used by another request');
      const record = JSON.parse(text) as LoginRecord;
      if (record.listener !== site.listener || record.origin !== site.origin) throw bad('login of another listener');
      if (query.get('state') !== record.state) throw bad('state is not this browser’s');
      const rt = await idp();
      let params: URLSearchParams;
      try {
        params = oauth.validateAuthResponse(rt.as, client, query, record.state);
      } catch (err) {
        throw idpError(err, 'authorization response', 'ERR_LOGIN_REJECTED');
      }
      const redirectUri = `${site.origin}/_portcullis/callback`;
      let tokens: oauth.TokenEndpointResponse;
      let payload: JWTPayload;
      idpRequests++;
      try {
        const res = await oauth.authorizationCodeGrantRequest(rt.as, client, rt.clientAuth, params, redirectUri, record.verifier, http());
        tokens = await oauth.processAuthorizationCodeResponse(rt.as, client, res, {
          expectedNonce: record.nonce,
          requireIdToken: true,
        });
        payload = await verifyIdToken(rt, tokens.id_token ?? '');
        if (payload.nonce !== record.nonce) throw new GatewayError('ERR_LOGIN_REJECTED', `${name}: ID token nonce mismatch`);
      } catch (err) {
        throw idpError(err, 'code exchange', 'ERR_LOGIN_REJECTED');
      }
      const now = d.clock.now();
      const sub = payload.sub as string;
      const sid = typeof payload.sid === 'string' ? payload.sid : undefined;
      const record2 = withTokens(
        {
          v: 1,
          listener: site.listener,
          origin: site.origin,
          sub,
          sid,
          claims: Object.freeze({ ...payload }),
          idToken: tokens.id_token,
          createdAtMs: now,
          lastSeenAtMs: now,
          absoluteExpiresAtMs: now + config.session.absoluteTimeoutSeconds * 1000,
        },
        tokens,
        undefined,
      );
      const id = newCookieId();
      await viaStore(sessions.create(tokenHash(id), record2));
      observer.login(name, 'success');
      d.logger.info({ provider: name, session: tokenHash(id).slice(0, 12) }, 'login: session created');
      return {
        location: record.returnTo,
        cookies: [setCookie(SESSION_COOKIE, id, config.session.absoluteTimeoutSeconds), clearCookie(LOGIN_COOKIE)],
      };
    } catch (err) {
      const gerr = err instanceof GatewayError ? err : idpError(err, 'login', 'ERR_LOGIN_REJECTED');
      observer.login(
        name,
        gerr.code === 'ERR_LOGIN_BAD_STATE'
          ? 'bad_state'
          : gerr.code === 'ERR_AUTHN_UNAVAILABLE' || gerr.code === 'ERR_STORE_UNAVAILABLE'
            ? 'unavailable'
            : 'rejected',
      );
      throw gerr;
    }
  }

  async function logout(site: LoginSite, sessionId: string | undefined, loggedOutUrl: string): Promise<LoginStep> {
    let idToken: string | undefined;
    if (sessionId !== undefined) {
      const hash = tokenHash(sessionId);
      // A logout the store cannot record is a 503, not a logout that leaves the session usable elsewhere.
      const found = await viaStore(sessions.use(hash));
      const r = found.record;
      // A cookie of another listener ends nothing here.
      if (r !== undefined && r.listener === site.listener && r.origin === site.origin) {
        idToken = r.idToken;
        if (await viaStore(sessions.end(hash))) observer.logout(name, 'user', 1);
      }
    }
    const cookies = [clearCookie(SESSION_COOKIE)];
    // RP-initiated logout (OpenID RP-Initiated Logout 1.0 §2) when the IdP offers it; else the gateway's page.
    const endpoint = runtime?.as.end_session_endpoint;
    if (idToken !== undefined && endpoint !== undefined) {
      const url = new URL(endpoint);
      url.searchParams.set('id_token_hint', idToken);
      url.searchParams.set('client_id', config.clientId);
      url.searchParams.set('post_logout_redirect_uri', loggedOutUrl);
      return { location: url.href, cookies };
    }
    return { location: loggedOutUrl, cookies };
  }

  async function backchannelLogout(logoutToken: string): Promise<number> {
    const bad = (why: string): GatewayError => new GatewayError('ERR_LOGOUT_BAD_TOKEN', `${name}: ${why}`);
    const rt = await idp();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(logoutToken, rt.keys.getKey, {
        algorithms: [...config.algorithms],
        issuer: rt.as.issuer,
        audience: config.clientId,
        requiredClaims: ['iat', 'jti', 'events'],
        clockTolerance: config.clockToleranceSeconds,
        // §2.4: a logout token is short-lived; refuse old ones even without exp.
        maxTokenAge: 600 + config.clockToleranceSeconds,
        currentDate: new Date(d.clock.now()),
      }));
    } catch (err) {
      if (err instanceof KeySourceUnavailable) throw new GatewayError('ERR_AUTHN_UNAVAILABLE', `${name}: ${err.message}`);
      throw bad(`logout token: ${err instanceof joseErrors.JOSEError ? err.code : 'invalid'}`);
    }
    const events = payload.events;
    if (
      typeof events !== 'object' ||
      events === null ||
      Array.isArray(events) ||
      typeof (events as Record<string, unknown>)['http://schemas.openid.net/event/backchannel-logout'] !== 'object'
    )
      throw bad('no backchannel-logout event');
    // §2.4: a logout token never carries a nonce (it must not be mistaken for an ID token).
    if (payload.nonce !== undefined) throw bad('a nonce in a logout token');
    const sid = typeof payload.sid === 'string' ? payload.sid : undefined;
    const sub = typeof payload.sub === 'string' ? payload.sub : undefined;
    if (sid === undefined && sub === undefined) throw bad('neither sid nor sub');
    // §2.6 step 10: a jti seen before is a replay.
    if (!(await viaStore(store.add(`jti:${name}:${String(payload.jti)}`, '1', 3_600_000)))) throw bad('jti replayed');
    const n = await viaStore(sessions.endAll(sid !== undefined ? { sid } : { sub }));
    observer.logout(name, 'backchannel', n);
    d.logger.info({ provider: name, sessions: n }, 'back-channel logout');
    return n;
  }

  return {
    name,
    type: 'oidc',
    authenticate(credential: Credential): Promise<AuthnResult> {
      if (credential.kind !== 'session') return Promise.resolve('not_applicable');
      return authenticateSession(credential.hash, { listener: credential.listener, origin: credential.origin });
    },
    readiness: () => (runtime === undefined ? lastError : undefined),
    warmUp: () => idp().then(
      (rt) => rt.keys.warmUp(),
      () => undefined,
    ),
    stats: () => ({
      cacheEntries: 0,
      cacheHits: 0,
      cacheMisses: 0,
      cacheEvictions: 0,
      idpRequests: idpRequests + (runtime?.keys.counters().requests ?? 0),
      idpFailures: idpFailures + (runtime?.keys.counters().failures ?? 0),
      staleServed: 0,
      reloads: 0,
    }),
    close: () => undefined,
    beginLogin,
    finishLogin,
    logout,
    backchannelLogout,
    ownsLogin: async (cookie) => (await viaStore(pendingStore.get(`login:${name}:${tokenHash(cookie)}`))) !== undefined,
    issuedBy: (iss) => iss === runtime?.as.issuer || iss === config.issuer || URL.parse(iss)?.href === issuerUrl.href,
    activeSessions: () => sessions.count(),
  };
}

/** The unverified `iss` of a JWT, to pick the provider that verifies it; undefined when unreadable. */
export function unverifiedIssuer(jwt: string): string | undefined {
  try {
    const iss = decodeJwt(jwt).iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}
