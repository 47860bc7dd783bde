/**
 * The one access-log line of a request that went through the stages, as every listener with routes writes it
 * (http-handler.ts, decision-handler.ts): who asked (peer, client certificate, principal), what (route,
 * method, normalized path), how it ended (status, outcome, reason) and how long it took.
 */
import type { Clock } from '../clock.js';
import { requestIdOf, type RequestIdSource } from '../mutate/request-id.js';
import { loggablePath, type AccessEntry, type AccessLog, type AccessOutcome } from '../observability/access-log.js';
import type { RequestContext, RequestView } from '../pipeline/context.js';

/** How a request ended, for its line. */
export interface RequestEnd {
  readonly status: number;
  readonly outcome: AccessOutcome;
  readonly reason?: string | undefined;
  readonly detail?: string | undefined;
  readonly bytesIn?: number;
  readonly bytesOut?: number;
}

/** Writes the line of one request of listener `listener`. */
export type RequestLogger = (ctx: RequestContext<RequestView>, end: RequestEnd) => void;

/** The request logger of one listener. With the access log off, a request costs no line object at all. */
export function createRequestLogger(
  listener: string,
  deps: { readonly clock: Clock; readonly accessLog: AccessLog; readonly newRequestId: RequestIdSource },
): RequestLogger {
  const { clock, accessLog, newRequestId } = deps;
  return (ctx, end) => {
    if (!accessLog.wants(end.status, end.outcome)) return;
    const req = ctx.req;
    const identity = ctx.conn?.identity;
    const entry: AccessEntry = {
      listener,
      route: ctx.rt?.id,
      method: req.method,
      path: ctx.path ?? loggablePath(req.url),
      clientAddress: ctx.peer.clientAddress,
      clientPort: ctx.peer.clientPort,
      status: end.status,
      durationMs: Number(clock.hrtime() - ctx.started) / 1e6,
      bytesIn: end.bytesIn ?? 0,
      bytesOut: end.bytesOut ?? 0,
      clientSubject: identity?.subject,
      clientFingerprint: identity?.fingerprint256,
      principal: ctx.principal?.subject,
      provider: ctx.provider,
      tokenHash: ctx.hashPrefix,
      outcome: end.outcome,
      reason: end.reason,
      detail: end.detail,
      requestId: ctx.requestId ?? requestIdOf(ctx.req.rawHeaders, newRequestId),
      upgrade: ctx.upgrade ? true : undefined,
    };
    accessLog.write(entry);
  };
}
