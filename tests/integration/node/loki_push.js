// Pushes N log lines to a Loki URL with winston-loki (protobuf + snappy, its default),
// labels {app, job="winston"} and a level label per line, then exits once sent.
// usage: node loki_push.js URL APP N
const winston = require('winston');
const LokiTransport = require('winston-loki');

const [url, app, n] = process.argv.slice(2);
const transport = new LokiTransport({
  host: url,
  labels: { app, job: 'winston' },
  json: false,
  batching: true,
  interval: 0.2,
  replaceTimestamp: false,
  onConnectionError: (err) => { console.error('push failed:', err && err.message); process.exitCode = 1; },
});
const logger = winston.createLogger({ transports: [transport] });
for (let i = 0; i < Number(n); i++) {
  logger.log({ level: i % 10 === 0 ? 'error' : 'info', message: `request ${i} status=${i % 10 === 0 ? 500 : 200}` });
}
transport.flush().then(() => { transport.close && transport.close(); setTimeout(() => process.exit(), 100); });
