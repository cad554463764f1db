/*
 * Etsy statsd backend of bench/ingest.py: at each flush, one JSON line on
 * stdout with what the server received since the previous flush (statsd
 * resets these counters after every flush). Nothing else is sent anywhere.
 */

exports.init = function (startupTime, config, events) {
  const prefix = config.prefixStats === undefined ? "statsd" : config.prefixStats;

  events.on("flush", function (timestamp, metrics) {
    const counters = metrics.counters;
    const line = {
      flush: timestamp,
      packets: counters[prefix + ".packets_received"] || 0,
      metrics: counters[prefix + ".metrics_received"] || 0,
      bad_lines: counters[prefix + ".bad_lines_seen"] || 0,
    };
    process.stdout.write(JSON.stringify(line) + "\n");
  });
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  return true;
};
