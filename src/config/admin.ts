/**
 * The `admin` section: the admin listener's address, its optional `tls` (resolved like a listener's) and its
 * `allowClients`, and the fail-closed rule for an admin listener off loopback.
 */
import { ConfigError } from '../errors.js';
import { isLoopbackHost } from '../policy/loopback.js';
import { parseListen } from './addresses.js';
import type { CompileContext } from './context.js';
import { compileAcl } from './listeners.js';
import type { AdminRuntimeConfig } from './runtime.js';
import type { AdminFile } from './schema.js';
import { resolveListenerTls, withServerNames } from './tls.js';

/**
 * `admin`: the address, `admin.tls` (the listener resolver, errors at `admin.tls.*`) and `allowClients`.
 * Fail closed off loopback: under requireEncryption a non-loopback admin listener needs `tls`, and that
 * `tls` must authenticate its clients — `clientCertificate: none`, or `optional` without `allowClients`,
 * would let anyone who reaches the port read /metrics (route and listener names, traffic) and purge the
 * token cache. With requireEncryption off those are warnings. Loopback keeps plaintext as the default.
 */
export function resolveAdmin(ctx: CompileContext, a: AdminFile): AdminRuntimeConfig | undefined {
  const { errors } = ctx;
  const errorsBefore = errors.length;
  const address = parseListen(a.listen, 'admin.listen', errors);
  const tls = withServerNames(ctx, resolveListenerTls(ctx, a.tls, 'admin'), a.tls, a.serverNames, address, 'admin', 'the admin listener');
  const mode = a.tls?.clientCertificate;
  const offLoopback = address !== undefined && !isLoopbackHost(address.host);
  const anonymous = mode === 'none' || (mode === 'optional' && a.allowClients === undefined);
  if (a.enabled && offLoopback && ctx.requireEncryption) {
    if (a.tls === undefined) {
      errors.push(
        new ConfigError(
          'admin.listen',
          a.listen,
          'a loopback address, or a tls section at admin.tls (the admin listener is not on loopback and requireEncryption is true; give it client certificates too: clientCertificate "require", and allowClients)',
        ),
      );
    } else if (anonymous) {
      errors.push(
        new ConfigError(
          'admin.tls.clientCertificate',
          mode,
          '"require", or "optional" together with admin.allowClients (the admin listener is not on loopback and requireEncryption is true: without client certificates anyone who reaches it reads /metrics and purges the token cache)',
        ),
      );
    }
  } else if (a.enabled && offLoopback) {
    if (a.tls === undefined)
      ctx.warnings.push(
        `the admin listener serves PLAINTEXT on ${a.listen} (not loopback; requireEncryption is false): /metrics and POST /cache/purge are open to anyone who reaches it`,
      );
    else if (anonymous)
      ctx.warnings.push(
        `the admin listener on ${a.listen} (not loopback) asks for no client certificate: anyone who reaches it reads /metrics and purges the token cache`,
      );
  }
  if (a.allowClients !== undefined && (a.tls === undefined || mode === 'none')) {
    errors.push(
      new ConfigError(
        'admin.allowClients',
        a.allowClients,
        a.tls === undefined
          ? 'no allowClients without admin.tls (the allow-list matches client certificates, which need TLS with clientCertificate "require" or "optional")'
          : 'no allowClients when admin.tls.clientCertificate is "none" (no client could match)',
      ),
    );
  }
  const acl = compileAcl(ctx, a.allowClients, 'admin.allowClients');
  if (a.enabled && acl?.entries.length === 0)
    ctx.warnings.push('admin.allowClients is empty: the admin listener denies every client');
  if (errors.length > errorsBefore || address === undefined) return undefined;
  return { enabled: a.enabled, keyPath: 'admin', address, tls, acl };
}
