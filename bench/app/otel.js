// OpenTelemetry JS for the application benchmark's OTel configuration,
// preloaded (node --require) into the front and back tiers: HTTP and ioredis
// auto-instrumentation, W3C trace-context propagation (the default
// propagator), spans batched (BatchSpanProcessor, its defaults) to an
// OTLP/HTTP endpoint. On SIGTERM it flushes what is left, then exits.
// env: APP_OTEL (the OTLP/HTTP traces URL), OTEL_SERVICE_NAME.
'use strict';
const { NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { IORedisInstrumentation } = require('@opentelemetry/instrumentation-ioredis');

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME ?? 'app' }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: process.env.APP_OTEL }))],
});
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation(), new IORedisInstrumentation()] });

process.once('SIGTERM', () => {
  provider.shutdown().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`otel: shutdown: ${err.message}\n`);
      process.exit(1);
    },
  );
});
