/**
 * The cluster's `/metrics`: every worker's registry (and the primary's own) summed into one exposition, as
 * if one process had served everything. Counters, histograms and gauges such as active connections or
 * token-cache entries sum; process metrics sum too (CPU and memory of the whole gateway, primary
 * included). A few gauges are the same value in every process and must not be multiplied by the worker
 * count: {@link AGGREGATOR_OVERRIDES}.
 */
import {
  AggregatorRegistry,
  type Aggregator,
  type MetricObjectWithValues,
  type MetricValue,
  type Registry,
} from 'prom-client';

/** One process's metrics, as `registry.getMetricsAsJSON()` returns them (and as they cross the IPC channel). */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * Metrics whose value is the same in every worker (config-derived timestamps, limits) or that describe
 * the gateway's start: summing them would be wrong. Everything else keeps prom-client's aggregator (sum,
 * or the one its default metrics declare, e.g. average for event-loop lag).
 */
export const AGGREGATOR_OVERRIDES: Readonly<Record<string, Aggregator>> = {
  // The earliest notAfter / nextUpdate is the one an alert must fire on; all workers load the same files.
  portcullis_certificate_expiry_timestamp_seconds: 'min',
  portcullis_crl_next_update_timestamp_seconds: 'min',
  // A 0/1 flag every worker computes from the same files: any 1 is the one to see.
  portcullis_tls_certificate_name_mismatch: 'max',
  // With Redis every worker counts the same shared sessions; with the memory store there is one worker.
  portcullis_sessions_active: 'max',
  // A worker that cannot reach the store is the one to see.
  portcullis_store_up: 'min',
  // Each worker reloads on its own: the oldest successful load is the one an alert must see.
  portcullis_config_last_reload_success_timestamp_seconds: 'min',
  // The gateway started when the primary did (prom-client omits this one in aggregates by default).
  portcullis_process_start_time_seconds: 'min',
  // A per-process limit: the tightest one is what matters.
  portcullis_process_max_fds: 'min',
  portcullis_nodejs_version_info: 'first',
  // Always 1, with the same labels in every process: the sum would say 3 gateways for one with 2 workers.
  portcullis_build_info: 'first',
};

/**
 * Aggregates the metrics of several processes into one registry (prom-client's
 * `AggregatorRegistry.aggregate`, with {@link AGGREGATOR_OVERRIDES} applied). Never throws on a metric
 * with an unknown aggregator: it falls back to sum.
 */
export function aggregateMetrics(perProcess: readonly MetricsJson[]): Registry {
  const known = new Set<string>(['omit', 'sum', 'first', 'min', 'max', 'average']);
  const adjusted = perProcess.map((metrics) =>
    metrics.map((m) => {
      const override = AGGREGATOR_OVERRIDES[m.name];
      if (override !== undefined) return { ...m, aggregator: override };
      return known.has(m.aggregator) ? m : { ...m, aggregator: 'sum' as const };
    }),
  );
  return AggregatorRegistry.aggregate(adjusted);
}
