// Sends one trace through the OpenTelemetry JS SDK and its OTLP exporter, then
// prints what it sent (ids, names, kinds, times, attributes, events, links,
// status, resource) as JSON on stdout, for the test to compare with what the
// store gives back.
//   node otel_send.js proto|http|grpc ENDPOINT SERVICE
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const api = require('@opentelemetry/api');

const [proto, endpoint, service] = process.argv.slice(2);
let exporter;
if (proto === 'proto') {
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
  exporter = new OTLPTraceExporter({ url: endpoint + '/v1/traces' });
} else if (proto === 'http') {
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
  exporter = new OTLPTraceExporter({ url: endpoint + '/v1/traces' });
} else {
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
  const grpc = require('@grpc/grpc-js');
  exporter = new OTLPTraceExporter({ url: endpoint, credentials: grpc.credentials.createInsecure() });
}
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ 'service.name': service, 'deployment.environment': 'test', 'host.cpus': 2 }),
  spanProcessors: [new BatchSpanProcessor(exporter)],
});
const tracer = provider.getTracer('cairn-test', '1.2.3');

const linked = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 };
const root = tracer.startSpan('GET /checkout', {
  kind: api.SpanKind.SERVER,
  attributes: { 'http.method': 'GET', 'http.status_code': 500, 'ratio': 0.25, 'cached': false, 'tags': ['a', 'b'] },
  links: [{ context: linked, attributes: { 'link.why': 'batch' } }],
});
root.addEvent('cart loaded', { 'items': 3 });
const ctx = api.trace.setSpan(api.context.active(), root);
const child = tracer.startSpan('SELECT orders', { kind: api.SpanKind.CLIENT, attributes: { 'db.system': 'postgresql' } }, ctx);
child.end();
root.setStatus({ code: api.SpanStatusCode.ERROR, message: 'payment failed' });
root.end();

const spans = [root, child].map((s) => ({
  traceId: s.spanContext().traceId,
  spanId: s.spanContext().spanId,
  parentSpanId: s.parentSpanContext ? s.parentSpanContext.spanId : (s.parentSpanId || null),
  name: s.name,
  kind: s.kind,
  startNs: (BigInt(s.startTime[0]) * 1000000000n + BigInt(s.startTime[1])).toString(),
  endNs: (BigInt(s.endTime[0]) * 1000000000n + BigInt(s.endTime[1])).toString(),
  attributes: s.attributes,
  events: s.events.map((e) => ({ name: e.name, attributes: e.attributes,
    timeNs: (BigInt(e.time[0]) * 1000000000n + BigInt(e.time[1])).toString() })),
  links: s.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId, attributes: l.attributes })),
  status: s.status,
}));
provider.forceFlush().then(() => provider.shutdown()).then(() => {
  process.stdout.write(JSON.stringify({ spans }) + '\n');
}).catch((e) => { console.error('export failed:', e); process.exit(1); });
