// An OTLP/HTTP traces sink for the tracing scenario: answers every export 200 (as a collector does) and counts the
// Check spans it received, so the bench can show that tracing-on really exported. A separate process, so its CPU is
// not the server's (in production the collector runs elsewhere).
import { createServer } from 'node:http';

const counts = { requests: 0, bytes: 0, checkSpans: 0 };
const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/count') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(counts));
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    counts.requests++;
    counts.bytes += body.length;
    // The span name is a plain protobuf string: one occurrence per Check span.
    counts.checkSpans += body.toString('latin1').split('Authorization/Check').length - 1;
    res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
  });
});
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ msg: 'listening', port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
