/** `portcullis_http_requests_total` on the hot path: one route's children, resolved once and then reused. */
import { METHOD_LABELS, methodLabel, statusClass, type Metrics } from './metrics.js';

type CounterChild = ReturnType<Metrics['requests']['labels']>;

/** `portcullis_http_requests_total` children of one route, created on first use per method and status class. */
export interface RequestCounter {
  count(method: string | undefined, status: number): void;
}

/** Row of each `methodLabel` value in a route's grid of children. */
const METHOD_ROW = new Map<string, number>(METHOD_LABELS.map((m, i) => [m, i]));

/**
 * The request counter of one route: children cached in a method × status-class grid, so counting a
 * request costs two array reads (prom-client would hash the four label values on every `labels()`).
 */
export function createRequestCounter(metrics: Metrics, listener: string, route: string): RequestCounter {
  const grid: (CounterChild | undefined)[][] = METHOD_LABELS.map(() => []);
  return {
    count(method, status) {
      const m = methodLabel(method);
      const row = grid[METHOD_ROW.get(m) ?? METHOD_LABELS.length - 1] as (CounterChild | undefined)[];
      // 1xx..5xx → 1..5; anything else (0: the client left first) → 0, labelled by statusClass().
      const col = status >= 100 && status < 600 ? Math.floor(status / 100) : 0;
      let c = row[col];
      if (c === undefined) {
        c = metrics.requests.labels(listener, route, m, statusClass(status));
        row[col] = c;
      }
      c.inc();
    },
  };
}
